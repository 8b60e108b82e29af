"""A person's live multi-interest profile: bounded, time-decayed online clustering of embeddings.

Follows river's estimator contract (``learn_one`` / ``predict_one``, constructor arguments stored
verbatim and validated eagerly, ``clone()``), so it is unit-tested, pickled into Faust tables and
benchmarked without a broker. The algorithm is an online take on PinnerSage's interest clusters:

- each observation is an L2-normalised embedding with a signal weight (purchase > cart > like >
  click > view; dislike negative) and a timestamp;
- it joins the nearest interest when cosine ≥ ``similarity_threshold``; otherwise it opens a new
  interest, or — at ``max_interests`` — replaces the weakest interest if that one now weighs less
  than the observation, else joins the nearest anyway;
- weights decay with a half-life in *event time* (late, out-of-order events are decayed by their
  own age instead of resetting the clock);
- each interest keeps an exemplar item (the one seen closest to its centroid, PinnerSage's
  medoid), the platforms it came from, and a label from its top categories/tags;
- decayed per-platform, per-type and per-category counters; a bounded ring of recent event-id
  hashes makes a replayed event a no-op; a bounded list of consumed items serves filtering.

State is bounded in bytes whatever the history length (see :meth:`__getstate__`).

>>> import numpy as np
>>> p = InterestProfile(max_interests=2)
>>> e = np.zeros(4, dtype=np.float32); e[0] = 1
>>> p.learn_one({"event_id": "e1", "embedding": e, "weight": 1.0, "ts": 0, "platform": "shop",
...              "type": "view", "item_id": "i1", "title": "Shoes", "terms": ["sports"]})
>>> p.predict_one({"embedding": e}), p.n_interests, p.interests(0)[0].label
(0, 1, 'sports')
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import base

_MS_PER_DAY = 86_400_000.0


def event_hash(event_id: str) -> int:
    """64-bit hash of an event id for the dedup ring (stable across processes)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True, slots=True)
class Interest:
    """A read-only view of one interest cluster, weight decayed to the asked time."""

    index: int
    centroid: np.ndarray
    weight: float
    events: int
    exemplar_id: str | None
    exemplar_title: str | None
    platforms: dict[str, float]
    terms: dict[str, float]

    @property
    def label(self) -> str:
        if self.terms:
            top = sorted(self.terms.items(), key=lambda kv: -kv[1])[:3]
            return " · ".join(t for t, _ in top)
        return self.exemplar_title or self.exemplar_id or f"interest {self.index}"


class InterestProfile(base.Clusterer):
    """Bounded multi-interest profile of one person (river ``Clusterer`` contract)."""

    def __init__(
        self,
        max_interests: int = 8,
        half_life_days: float = 30.0,
        similarity_threshold: float = 0.5,
        recent_ids: int = 128,
        consumed_items: int = 200,
        max_terms: int = 6,
    ) -> None:
        if max_interests < 1:
            raise ValueError("max_interests must be at least 1.")
        if half_life_days <= 0:
            raise ValueError("half_life_days must be greater than 0.")
        if not -1.0 <= similarity_threshold <= 1.0:
            raise ValueError("similarity_threshold must be within [-1, 1].")
        if recent_ids < 1 or consumed_items < 0 or max_terms < 1:
            raise ValueError("recent_ids and max_terms must be >= 1, consumed_items >= 0.")
        self.max_interests = max_interests
        self.half_life_days = half_life_days
        self.similarity_threshold = similarity_threshold
        self.recent_ids = recent_ids
        self.consumed_items = consumed_items
        self.max_terms = max_terms
        self._reset()

    def _reset(self) -> None:
        self._centroids: np.ndarray | None = None  # (k, d) float32, rows L2-normalised
        self._weights: list[float] = []  # decayed weight as of _touched[j]
        self._touched: list[int] = []
        self._counts: list[int] = []
        self._exemplars: list[tuple[str, str, float] | None] = []  # (item_id, title, cosine)
        self._platforms: list[dict[str, float]] = []
        self._terms: list[dict[str, float]] = []
        self._recent: list[int] = []
        self._consumed: dict[str, None] = {}
        self._merged: list[str] = []  # persons folded in, so a replayed merge is a no-op
        self.counters: dict[str, dict[str, float]] = {
            "platforms": {},
            "types": {},
            "categories": {},
        }
        self._counters_at = 0
        self.events = 0
        self.updated_at = 0
        self.last_change = 0.0  # how much the last learn_one moved the profile, for refresh policy

    # --- river contract ----------------------------------------------------------------------
    def learn_one(self, x: dict[str, Any]) -> None:  # type: ignore[override]
        """Learn one observation: ``{event_id, embedding?, weight, ts, platform, type,
        item_id?, title?, terms?}``. A repeated ``event_id`` changes nothing."""
        self.learn(x)

    def predict_one(self, x: dict[str, Any]) -> int:  # type: ignore[override]
        """Index of the interest nearest to ``x["embedding"]`` (0 when the profile is empty)."""
        if self._centroids is None or len(self._weights) == 0:
            return 0
        emb = np.asarray(x["embedding"], dtype=np.float32)
        return int(np.argmax(self._centroids @ emb))

    # --- learning ----------------------------------------------------------------------------
    def seen(self, event_id: str) -> bool:
        return event_hash(event_id) in self._recent

    def learn(self, x: Mapping[str, Any]) -> bool:
        """Like :meth:`learn_one`, returning False when the event was a duplicate."""
        h = event_hash(str(x["event_id"]))
        if h in self._recent:
            self.last_change = 0.0
            return False
        self._recent.append(h)
        if len(self._recent) > self.recent_ids:
            del self._recent[: len(self._recent) - self.recent_ids]

        ts = int(x.get("ts", self.updated_at))
        w = float(x.get("weight", 1.0))
        self._count(x, ts, w)
        self.last_change = 0.0
        emb = x.get("embedding")
        if emb is not None and w != 0.0:
            e = np.asarray(emb, dtype=np.float32)
            if w > 0:
                self.last_change = self._learn_positive(e, w, ts, x)
            else:
                self.last_change = self._learn_negative(e, -w, ts)
        item_id = x.get("item_id")
        if item_id and self.consumed_items:
            self._consumed.pop(item_id, None)
            self._consumed[item_id] = None
            while len(self._consumed) > self.consumed_items:
                del self._consumed[next(iter(self._consumed))]
        self.events += 1
        self.updated_at = max(self.updated_at, ts)
        return True

    def _decay(self, dt_ms: float) -> float:
        return math.pow(2.0, -dt_ms / (self.half_life_days * _MS_PER_DAY))

    def _count(self, x: Mapping[str, Any], ts: int, w: float) -> None:
        if ts > self._counters_at:
            f = self._decay(ts - self._counters_at)
            for table in self.counters.values():
                for k in table:
                    table[k] *= f
            self._counters_at = ts
            add = 1.0
        else:
            add = self._decay(self._counters_at - ts)
        c = self.counters
        c["platforms"][x.get("platform", "?")] = (
            c["platforms"].get(x.get("platform", "?"), 0.0) + add
        )
        c["types"][x.get("type", "?")] = c["types"].get(x.get("type", "?"), 0.0) + add
        if w > 0:
            for term in x.get("terms", ()) or ():
                c["categories"][term] = c["categories"].get(term, 0.0) + add * w
            _trim(c["categories"], 16)

    def _weight_at(self, j: int, ts: int) -> float:
        return self._weights[j] * self._decay(max(0, ts - self._touched[j]))

    def _add_weight(self, j: int, w: float, ts: int) -> tuple[float, float]:
        """Add ``w`` observed at ``ts`` to interest j; returns (old, added) on one time base."""
        if ts >= self._touched[j]:
            old = self._weight_at(j, ts)
            added = w
            self._touched[j] = ts
        else:  # a late event: decay its contribution by its age instead
            old = self._weights[j]
            added = w * self._decay(self._touched[j] - ts)
        self._weights[j] = old + added
        return old, added

    def _learn_positive(self, e: np.ndarray, w: float, ts: int, x: Mapping[str, Any]) -> float:
        k = len(self._weights)
        if k == 0 or self._centroids is None:
            return self._open(e, w, ts, x, slot=None)
        sims = self._centroids @ e
        j = int(np.argmax(sims))
        if sims[j] < self.similarity_threshold:
            if k < self.max_interests:
                return self._open(e, w, ts, x, slot=None)
            now = max(ts, self.updated_at)
            current = [self._weight_at(i, now) for i in range(k)]
            weakest = int(np.argmin(current))
            if current[weakest] < w:
                return self._open(e, w, ts, x, slot=weakest)
        old, added = self._add_weight(j, w, ts)
        c = self._centroids[j] * old + e * added
        norm = float(np.linalg.norm(c))
        if norm > 0:
            self._centroids[j] = c / norm
        self._counts[j] += 1
        self._annotate(j, e, w, x)
        return added / (old + added)

    def _learn_negative(self, e: np.ndarray, w: float, ts: int) -> float:
        if self._centroids is None or not self._weights:
            return 0.0
        sims = self._centroids @ e
        j = int(np.argmax(sims))
        if sims[j] < self.similarity_threshold:
            return 0.0
        now = max(ts, self._touched[j])
        before = self._weight_at(j, now)
        after = before - w * float(sims[j]) * self._decay(now - ts)
        if after <= 0:
            self._drop(j)
            return 1.0
        self._weights[j], self._touched[j] = after, now
        return (before - after) / before

    def _open(
        self, e: np.ndarray, w: float, ts: int, x: Mapping[str, Any], slot: int | None
    ) -> float:
        row = e[None, :].astype(np.float32)
        if slot is None:
            self._centroids = (
                row.copy() if self._centroids is None else np.vstack([self._centroids, row])
            )
            self._weights.append(w)
            self._touched.append(ts)
            self._counts.append(1)
            self._exemplars.append(None)
            self._platforms.append({})
            self._terms.append({})
            slot = len(self._weights) - 1
        else:
            assert self._centroids is not None
            self._centroids[slot] = row[0]
            self._weights[slot], self._touched[slot], self._counts[slot] = w, ts, 1
            self._exemplars[slot] = None
            self._platforms[slot] = {}
            self._terms[slot] = {}
        self._annotate(slot, e, w, x)
        return 1.0

    def _annotate(self, j: int, e: np.ndarray, w: float, x: Mapping[str, Any]) -> None:
        assert self._centroids is not None
        platform = str(x.get("platform", "?"))
        self._platforms[j][platform] = self._platforms[j].get(platform, 0.0) + w
        for term in x.get("terms", ()) or ():
            self._terms[j][term] = self._terms[j].get(term, 0.0) + w
        _trim(self._terms[j], self.max_terms)
        item_id = x.get("item_id")
        if item_id:
            cos = float(self._centroids[j] @ e)
            ex = self._exemplars[j]
            if ex is None or cos >= ex[2] or ex[0] == item_id:
                self._exemplars[j] = (str(item_id), str(x.get("title") or item_id), cos)

    def _drop(self, j: int) -> None:
        assert self._centroids is not None
        self._centroids = np.delete(self._centroids, j, axis=0)
        for lst in (
            self._weights,
            self._touched,
            self._counts,
            self._exemplars,
            self._platforms,
            self._terms,
        ):
            del lst[j]  # type: ignore[attr-defined]
        if not self._weights:
            self._centroids = None

    # --- merging persons ---------------------------------------------------------------------
    def merge(self, other: InterestProfile, source: str | None = None) -> bool:
        """Fold ``other`` (another person's profile, now the same person) into this one.

        ``source`` names the absorbed person; merging the same source twice (a replayed
        command) changes nothing and returns False.
        """
        if source is not None:
            if source in self._merged:
                return False
            self._merged = [*self._merged, source][-64:]
        now = max(self.updated_at, other.updated_at)
        if other._centroids is not None:
            for j in range(len(other._weights)):
                w = other._weight_at(j, now)
                row = other._centroids[j]
                self._centroids = (
                    row[None, :].copy()
                    if self._centroids is None
                    else np.vstack([self._centroids, row])
                )
                self._weights.append(w)
                self._touched.append(now)
                self._counts.append(other._counts[j])
                self._exemplars.append(other._exemplars[j])
                self._platforms.append(dict(other._platforms[j]))
                self._terms.append(dict(other._terms[j]))
        while len(self._weights) > self.max_interests:
            self._merge_closest_pair(now)
        for name, table in other.counters.items():
            f_other = other._decay(max(0, now - other._counters_at))
            f_self = self._decay(max(0, now - self._counters_at))
            mine = self.counters[name]
            for k in mine:
                mine[k] *= f_self
            for k, v in table.items():
                mine[k] = mine.get(k, 0.0) + v * f_other
        self._counters_at = now
        self._recent = (self._recent + [h for h in other._recent if h not in self._recent])[
            -self.recent_ids :
        ]
        for item in other._consumed:
            self._consumed[item] = None
        while len(self._consumed) > self.consumed_items:
            del self._consumed[next(iter(self._consumed))]
        self.events += other.events
        self.updated_at = now
        self.last_change = 1.0
        return True

    def _merge_closest_pair(self, now: int) -> None:
        assert self._centroids is not None
        sims = self._centroids @ self._centroids.T
        np.fill_diagonal(sims, -np.inf)
        i, j = (int(x) for x in np.unravel_index(int(np.argmax(sims)), sims.shape))
        a, b = min(i, j), max(i, j)
        wa, wb = self._weight_at(a, now), self._weight_at(b, now)
        c = self._centroids[a] * wa + self._centroids[b] * wb
        self._centroids[a] = c / max(float(np.linalg.norm(c)), 1e-12)
        self._weights[a], self._touched[a] = wa + wb, now
        self._counts[a] += self._counts[b]
        ea, eb = self._exemplars[a], self._exemplars[b]
        self._exemplars[a] = ea if (eb is None or (ea is not None and wa >= wb)) else eb
        for mine, theirs in (
            (self._platforms[a], self._platforms[b]),
            (self._terms[a], self._terms[b]),
        ):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0.0) + v
        _trim(self._terms[a], self.max_terms)
        self._drop(b)

    # --- reading -----------------------------------------------------------------------------
    @property
    def n_interests(self) -> int:
        return len(self._weights)

    @property
    def consumed(self) -> frozenset[str]:
        return frozenset(self._consumed)

    def recent_items(self, n: int | None = None) -> list[str]:
        """The last ``n`` (default: all kept) consumed item ids, oldest first, latest last."""
        items = list(self._consumed)
        return items if n is None else items[len(items) - min(n, len(items)) :]

    def interests(self, now: int | None = None) -> list[Interest]:
        """Interests, heaviest first, weights decayed to ``now`` (default: last update)."""
        if self._centroids is None:
            return []
        t = self.updated_at if now is None else now
        out = []
        for j in range(len(self._weights)):
            ex = self._exemplars[j]
            out.append(
                Interest(
                    index=j,
                    centroid=self._centroids[j],
                    weight=self._weight_at(j, t),
                    events=self._counts[j],
                    exemplar_id=ex[0] if ex else None,
                    exemplar_title=ex[1] if ex else None,
                    platforms=dict(self._platforms[j]),
                    terms=dict(self._terms[j]),
                )
            )
        out.sort(key=lambda i: -i.weight)
        return out

    def to_json(self, person_id: str, accounts: Iterable[str] = ()) -> dict[str, Any]:
        """The ``schemas/profile.schema.json`` snapshot."""
        f = self._decay(max(0, self.updated_at - self._counters_at))
        return {
            "person_id": person_id,
            "updated_at": self.updated_at,
            "events": self.events,
            "accounts": list(accounts),
            "interests": [
                {
                    "label": i.label,
                    "weight": round(i.weight, 4),
                    "exemplar": {"item_id": i.exemplar_id, "title": i.exemplar_title or ""}
                    if i.exemplar_id
                    else None,
                    "platforms": {k: round(v, 3) for k, v in i.platforms.items()},
                    "events": i.events,
                }
                for i in self.interests()
            ],
            **{
                name: {k: round(v * f, 4) for k, v in table.items()}
                for name, table in self.counters.items()
            },
        }

    # --- compact pickling ----------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """The pickled state, compacted: centroids as int8 with one float32 scale per row (cosine
        to the float32 original ≥ 0.9999 for 384-d unit vectors), the dedup ring as packed
        uint64 and the consumed ids as one string. ``docs/performance.md`` has the bytes."""
        state = dict(self.__dict__)
        state.pop("last_change", None)  # transient: describes the last call, not the person
        if self._centroids is not None:
            state["_centroids"] = _quantize(self._centroids)
        state["_recent"] = np.asarray(self._recent, dtype="<u8").tobytes()
        ids = list(self._consumed)
        if not any(_SEP in i for i in ids):
            state["_consumed"] = _SEP.join(ids)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_merged", [])  # pickles from before merges were recorded
        self.last_change = 0.0
        c = state.get("_centroids")
        if isinstance(c, tuple):
            self._centroids = _dequantize(c)
        elif c is not None:  # float16 pickles from before int8
            self._centroids = np.asarray(c, dtype=np.float32)
        if isinstance(state["_recent"], bytes):
            self._recent = np.frombuffer(state["_recent"], dtype="<u8").tolist()
        if isinstance(state["_consumed"], str):
            ids = state["_consumed"].split(_SEP) if state["_consumed"] else []
            self._consumed = dict.fromkeys(ids)


_SEP = "\x1f"  # ASCII unit separator: joins consumed item ids in a pickle


def _quantize(m: np.ndarray) -> tuple[bytes, bytes, int]:
    """Rows to symmetric int8 with a per-row float32 scale: ``(codes, scales, columns)``.

    >>> m = np.array([[0.6, -0.8], [0.0, 0.0]], dtype=np.float32)
    >>> [[round(float(v), 2) for v in row] for row in _dequantize(_quantize(m))]
    [[0.6, -0.8], [0.0, 0.0]]
    """
    scale = np.abs(m).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    codes = np.clip(np.rint(m / scale[:, None]), -127, 127).astype(np.int8)
    return codes.tobytes(), scale.astype("<f4").tobytes(), int(m.shape[1])


def _dequantize(packed: tuple[bytes, bytes, int]) -> np.ndarray:
    codes, scales, cols = packed
    q = np.frombuffer(codes, dtype=np.int8).reshape(-1, cols).astype(np.float32)
    out: np.ndarray = q * np.frombuffer(scales, dtype="<f4")[:, None]
    return out


def _trim(table: dict[str, float], keep: int) -> None:
    if len(table) > keep:
        for k, _ in sorted(table.items(), key=lambda kv: kv[1])[: len(table) - keep]:
            del table[k]


__all__ = ["Interest", "InterestProfile", "event_hash"]
