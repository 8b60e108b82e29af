"""The methods under test: five baselines and crossprofile itself, all behind one small contract.

Every method sees the same thing: the event index ``i`` (to read the event from
:class:`~stream.evaluate.data.EvalData`), the person the run's identity gives it, the number of
catalogue rows seen so far (rows are numbered by first appearance) and the rows the person already
consumed. Nothing else — in particular nothing about events after ``i``.

- ``popularity``: interactions per item so far.
- ``recent-popularity``: the same, each interaction decayed with a half-life in event time.
- ``item-knn``: item–item co-occurrence over persons' histories, cosine-normalised
  (``co(a, b) / sqrt(n(a) n(b))``), summed over everything the person consumed.
- ``item-knn-recent``: the same co-occurrence, but only the person's last 20 items vote, the
  latest weighing most (sequence-aware; the strongest baseline here).
- ``biased-mf``: :class:`river.reco.BiasedMF` learning every event; items are scored with its own
  biases and latents (read back from the river model after each update, so ranking a whole
  catalogue is one matrix product rather than thousands of ``predict_one`` calls).
- ``seed-mean-embedding``: the seeds' method, one mean text embedding per person, cosine to the
  item embeddings.
- ``crossprofile``: the stream's :class:`~stream.profile.InterestProfile` learned from the stream's
  own observations (:func:`~stream.pipeline.observation`), ranked by the stream's
  :meth:`~stream.recommend.ItemIndex.recommend` with the collaborative and popularity signals of
  :class:`~stream.recommend.Signals` blended in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..pipeline import new_profile, observation
from ..profile import InterestProfile
from ..recommend import ItemIndex, Signals, recommend_blended, top_k
from ..settings import Settings
from .data import EvalData

_DAY_MS = 86_400_000.0


class Popularity:
    name = "popularity"

    def __init__(self, data: EvalData) -> None:
        self.data = data
        self.counts = np.zeros(len(data.items), dtype=np.float64)

    def recommend(self, i: int, person: int, n: int, exclude: np.ndarray, k: int) -> list[int]:
        return top_k(self.counts[:n], exclude, k)

    def learn(self, i: int, person: int) -> None:
        self.counts[self.data.item[i]] += 1.0


class RecentPopularity:
    """Exponentially decayed interaction counts (half-life in event time), kept on one time base
    so an update is O(1): each interaction adds ``2 ** ((t - t0) / h)``; rebased when large."""

    name = "recent-popularity"

    def __init__(self, data: EvalData, half_life_days: float = 180.0) -> None:
        self.data = data
        self.h = half_life_days * _DAY_MS
        self.scores = np.zeros(len(data.items), dtype=np.float64)
        self.t0: int | None = None

    def recommend(self, i: int, person: int, n: int, exclude: np.ndarray, k: int) -> list[int]:
        return top_k(self.scores[:n], exclude, k)

    def learn(self, i: int, person: int) -> None:
        ts = self.data.ts[i]
        if self.t0 is None:
            self.t0 = ts
        x = (ts - self.t0) / self.h
        if x > 50:  # rebase before the numbers overflow
            self.scores *= 2.0**-x
            self.t0, x = ts, 0.0
        self.scores[self.data.item[i]] += 2.0**x


class ItemKNN:
    """Item co-occurrence kNN over whole histories (every interaction counts once).

    By default every item the person consumed votes equally; ``recent=N`` lets only the last
    ``N`` vote, the one ``d`` steps back with weight ``recency ** d`` (the sequence-aware variant
    an engineer tries next; the report runs the configuration tuned on the first 80% of time).
    """

    name = "item-knn"

    def __init__(
        self,
        data: EvalData,
        alpha: float = 0.5,
        recent: int | None = None,
        recency: float = 1.0,
    ) -> None:
        self.data = data
        n = len(data.items)
        self.co = np.zeros((n, n), dtype=np.float32)
        self.count = np.zeros(n, dtype=np.float64)
        self.alpha = alpha
        self.recent = recent
        self.recency = recency
        self.history: dict[int, list[int]] = {}

    def recommend(self, i: int, person: int, n: int, exclude: np.ndarray, k: int) -> list[int]:
        hist = self.history.get(person)
        if not hist:
            return top_k(self.count[:n], exclude, k)  # nothing to go on: popularity
        if self.recent is not None:
            hist = hist[-self.recent :]
        rows = np.asarray(hist, dtype=np.int64)
        w = 1.0 / np.power(np.maximum(self.count[rows], 1.0), self.alpha)
        if self.recency != 1.0:
            w = w * self.recency ** np.arange(rows.size - 1, -1, -1)
        if len(rows) * 4 < n:
            s = w.astype(np.float32) @ self.co[rows, :n]
        else:
            full = np.zeros(self.co.shape[0], dtype=np.float32)
            full[rows] = w
            s = full[:n] @ self.co[:n, :n]
        s = s / np.power(np.maximum(self.count[:n], 1.0), 1.0 - self.alpha)
        # popularity breaks ties among items that never co-occurred
        return top_k(s + 1e-9 * self.count[:n], exclude, k)

    def learn(self, i: int, person: int) -> None:
        row = self.data.item[i]
        hist = self.history.setdefault(person, [])
        if row in hist:
            return
        if hist:
            rows = np.asarray(hist, dtype=np.int64)
            self.co[row, rows] += 1.0
            self.co[rows, row] += 1.0
        hist.append(row)
        self.count[row] += 1.0


class RecentItemKNN(ItemKNN):
    """:class:`ItemKNN` voting with the person's last 20 items, recency-weighted (0.7 per step
    back) — the strongest baseline on MovieLens-1M, tuned on the first 80% of time like
    crossprofile (``docs/quality.md``)."""

    name = "item-knn-recent"

    def __init__(
        self, data: EvalData, alpha: float = 0.7, recent: int | None = 20, recency: float = 0.7
    ) -> None:
        super().__init__(data, alpha=alpha, recent=recent, recency=recency)


class BiasedMF:
    """:class:`river.reco.BiasedMF` on every event.

    ``target="rating"`` learns the rating (river's textbook use); ``target="implicit"`` learns
    1 for a positive event and 0 otherwise, plus ``negatives`` sampled seen-so-far items at 0 per
    event (the usual way to make a rating model rank).
    """

    name = "biased-mf"

    def __init__(
        self,
        data: EvalData,
        *,
        n_factors: int = 16,
        lr: float = 0.01,
        l2: float = 0.01,
        target: str = "implicit",
        negatives: int = 3,
        seed: int = 7,
    ) -> None:
        from river import optim, reco

        self.data = data
        self.model = reco.BiasedMF(
            n_factors=n_factors,
            bias_optimizer=optim.SGD(lr),
            latent_optimizer=optim.SGD(lr),
            l2_bias=l2,
            l2_latent=l2,
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed),
            seed=seed,
        )
        n = len(data.items)
        self.i_bias = np.zeros(n, dtype=np.float64)
        self.i_lat = np.zeros((n, n_factors), dtype=np.float64)
        self.target = target
        self.negatives = negatives
        self.rng = np.random.default_rng(seed)
        self.n_seen = 0

    def recommend(self, i: int, person: int, n: int, exclude: np.ndarray, k: int) -> list[int]:
        m = self.model
        if person not in m.u_latents:
            return top_k(self.i_bias[:n], exclude, k)
        s = self.i_bias[:n] + self.i_lat[:n] @ np.asarray(m.u_latents[person], dtype=np.float64)
        return top_k(s, exclude, k)

    def _fit(self, person: int, row: int, y: float) -> None:
        m = self.model
        m.learn_one(person, row, y)  # type: ignore[no-untyped-call]
        self.i_bias[row] = m.i_biases[row]
        self.i_lat[row] = m.i_latents[row]

    def learn(self, i: int, person: int) -> None:
        d = self.data
        row = d.item[i]
        self.n_seen = max(self.n_seen, row + 1)
        if self.target == "rating":
            self._fit(person, row, d.rating[i])
            return
        self._fit(person, row, 1.0 if d.positive[i] else 0.0)
        for neg in self.rng.integers(0, self.n_seen, size=self.negatives):
            if int(neg) != row:
                self._fit(person, int(neg), 0.0)


class SeedMeanEmbedding:
    """The seeds' recommender: the mean embedding of everything the person did, cosine-ranked."""

    name = "seed-mean-embedding"

    def __init__(self, data: EvalData, emb: np.ndarray) -> None:
        self.data = data
        self.emb = emb
        self.sums: dict[int, np.ndarray] = {}

    def recommend(self, i: int, person: int, n: int, exclude: np.ndarray, k: int) -> list[int]:
        v = self.sums.get(person)
        if v is None:
            return []
        return top_k(self.emb[:n] @ v, exclude, k)

    def learn(self, i: int, person: int) -> None:
        v = self.emb[self.data.item[i]]
        s = self.sums.get(person)
        self.sums[person] = v.copy() if s is None else s + v


class CrossProfile:
    """The product: the stream's profile, observations, index and scorer, event by event."""

    name = "crossprofile"

    def __init__(
        self,
        data: EvalData,
        emb: np.ndarray,
        settings: Settings | None = None,
        **blend: Any,
    ) -> None:
        self.data = data
        self.emb = emb
        self.settings = settings or Settings()
        self.index = ItemIndex(
            emb.shape[1],
            capacity=max(16, len(data.items)),
            ann_min_items=self.settings.index_ann_min_items,
            background_build=False,  # an offline run: the graph in use from the same item each time
        )
        # exactly what a worker runs (Settings -> Signals), with any --params overrides on top
        self.signals = Signals(**{**self.settings.signals_config(), **blend})
        self.profiles: dict[int, InterestProfile] = {}
        self.row_of: dict[str, int] = {}

    def _profile(self, person: int) -> InterestProfile:
        p = self.profiles.get(person)
        if p is None:
            s = self.settings
            p = self.profiles[person] = new_profile(s)
        return p

    def recommend(self, i: int, person: int, n: int, exclude: np.ndarray, k: int) -> list[int]:
        profile = self.profiles.get(person)
        # the profile keeps its last ``consumed_items`` items; the protocol excludes them all
        bounded = profile is not None and exclude.size <= profile.consumed_items
        extra = () if bounded else [self.data.items[r].id for r in exclude.tolist()]
        scored = recommend_blended(
            self.index, profile, self.signals, k, now=self.data.ts[i], exclude=extra
        )
        return [self.row_of[s.item_id] for s in scored]

    def learn(self, i: int, person: int) -> None:
        d = self.data
        row = d.item[i]
        item = d.items[row]
        if item.id not in self.row_of:
            self.row_of[item.id] = len(self.index)
            self.index.upsert(item, self.emb[row])
        profile = self._profile(person)
        ev = d.event(i)
        obs = observation(ev, self.emb[row], self.settings)
        self.signals.learn(profile, self.index, item.id, ev.ts)
        profile.learn(obs)


def make_methods(
    data: EvalData,
    emb: np.ndarray,
    names: Sequence[str],
    params: dict[str, dict[str, Any]] | None = None,
    *,
    settings: Settings | None = None,
) -> list[Any]:
    """Fresh instances of the named methods, with per-method keyword overrides."""
    params = params or {}
    out: list[Any] = []
    for name in names:
        kw = params.get(name, {})
        if name == Popularity.name:
            out.append(Popularity(data))
        elif name == RecentPopularity.name:
            out.append(RecentPopularity(data, **kw))
        elif name == ItemKNN.name:
            out.append(ItemKNN(data, **kw))
        elif name == RecentItemKNN.name:
            out.append(RecentItemKNN(data, **kw))
        elif name == BiasedMF.name:
            out.append(BiasedMF(data, **kw))
        elif name == SeedMeanEmbedding.name:
            out.append(SeedMeanEmbedding(data, emb))
        elif name == CrossProfile.name:
            out.append(CrossProfile(data, emb, settings, **kw))
        else:
            raise ValueError(f"unknown method {name!r}")
    return out


METHODS = (
    Popularity.name,
    RecentPopularity.name,
    ItemKNN.name,
    RecentItemKNN.name,
    BiasedMF.name,
    SeedMeanEmbedding.name,
    CrossProfile.name,
)

__all__ = [
    "METHODS",
    "BiasedMF",
    "CrossProfile",
    "ItemKNN",
    "Popularity",
    "RecentItemKNN",
    "RecentPopularity",
    "SeedMeanEmbedding",
    "make_methods",
    "top_k",
]
