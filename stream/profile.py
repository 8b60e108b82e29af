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
  hashes makes a replayed event a no-op; a bounded list of consumed items (as 32-bit hashes of
  their ids, :func:`item_hash`) serves filtering and the co-visit evidence.

State is bounded in bytes whatever the history length: ≤ 4 KiB pickled at the defaults (see
:meth:`__getstate__` and ``docs/performance.md``).

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
import pickle
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import base

_MS_PER_DAY = 86_400_000.0


def event_hash(event_id: str) -> int:
    """32-bit hash of an event id for the dedup ring (stable across processes).

    A ring of 128 of them mistakes a new event for a replay with probability 128 / 2³² ≈ 3e-8.
    It is the low half of the 64-bit hash earlier versions kept, so their rings still match.
    """
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest[:4], "little")


def item_hash(item_id: str) -> int:
    """32-bit hash of an item id (CRC-32: ids that differ in up to 4 bytes never collide).

    Profiles keep consumed items as these hashes; :class:`stream.recommend.ItemIndex` maps them
    back to rows, and co-visit records carry them.

    >>> item_hash("ml-1") != item_hash("ml-2")
    True
    """
    return zlib.crc32(item_id.encode())


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
        self._consumed: dict[int, None] = {}  # item_hash of consumed ids, oldest first
        self._merged: list[int] = []  # event_hash of persons folded in: a replayed merge is a no-op
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
            ih = item_hash(str(item_id))
            self._consumed.pop(ih, None)
            self._consumed[ih] = None
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
            sh = event_hash(source)
            if sh in self._merged:
                return False
            self._merged = [*self._merged, sh][-64:]
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

    def has_consumed(self, item_id: str) -> bool:
        """Is ``item_id`` among the last ``consumed_items`` items this person consumed?"""
        return item_hash(item_id) in self._consumed

    def consumed_hashes(self, n: int | None = None) -> list[int]:
        """:func:`item_hash` of the last ``n`` (default: all kept) consumed items, oldest first,
        latest last (:meth:`stream.recommend.ItemIndex.rows_by_hash` maps them to rows)."""
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
        """The pickled state: ≤ 4 KiB at the defaults, whatever the history length.

        - centroids as 4-bit codes with one float32 scale per row (8 × 384 dims: 1.6 KB; mean
          cosine to the float32 original 0.992 on MiniLM centroids). Workers keep profiles in
          memory as float32, so a profile is quantised when it is *recovered*, not per event;
        - the dedup ring (event-id hashes), the consumed items (item-id hashes) and the merged
          persons as packed uint32;
        - per-interest numbers as float32/int64 arrays, exemplar titles cut to
          ``EXEMPLAR_TITLE_CHARS``;
        - the whole pickled and zlib-compressed (labels, ids and counters' keys compress well);
        - past ``STATE_BUDGET_BYTES`` (long titles or terms), annotations are trimmed in steps
          (``_TRIM_LEVELS``) — never the centroids, weights, rings or counts.

        ``docs/performance.md`` has the bytes.
        """
        for level in range(len(_TRIM_LEVELS)):
            z = zlib.compress(pickle.dumps(self._body(level), protocol=5), 6)
            if len(z) <= STATE_BUDGET_BYTES:
                break
        return {"v": 3, "z": z}

    def _body(self, level: int) -> dict[str, Any]:
        """The state to pickle; ``level`` > 0 (a profile over budget, e.g. very long titles)
        keeps fewer terms per interest, fewer category counters and shorter exemplar titles."""
        terms, categories, title_chars = _TRIM_LEVELS[level]
        k = len(self._weights)
        cents = self._centroids
        body: dict[str, Any] = {
            "cfg": tuple(getattr(self, name) for name in _PARAMS),
            "centroids": None if cents is None or k == 0 else _quantize4(cents),
            "weights": np.asarray(self._weights, dtype="<f4").tobytes(),
            "touched": np.asarray(self._touched, dtype="<i8").tobytes(),
            "counts": np.asarray(self._counts, dtype="<u4").tobytes(),
            "exemplars": [
                None if ex is None else (ex[0], ex[1][:title_chars], round(ex[2], 4))
                for ex in self._exemplars
            ],
            "platforms": [_pack_table(t) for t in self._platforms],
            "terms": [_pack_table(t, terms) for t in self._terms],
            "recent": np.asarray(self._recent, dtype="<u4").tobytes(),
            "consumed": np.asarray(list(self._consumed), dtype="<u4").tobytes(),
            "merged": np.asarray(self._merged, dtype="<u4").tobytes(),
            "counters": {
                name: _pack_table(t, categories if name == "categories" else None)
                for name, t in self.counters.items()
            },
            "counters_at": self._counters_at,
            "events": self.events,
            "updated_at": self.updated_at,
        }
        return body

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("v") == 3:
            self._load_v3(pickle.loads(zlib.decompress(state["z"])))  # our own bytes
            return
        self._load_v2(state)

    def _load_v3(self, b: dict[str, Any]) -> None:
        for name, value in zip(_PARAMS, b["cfg"], strict=True):
            setattr(self, name, value)
        self._reset()
        self._centroids = None if b["centroids"] is None else _dequantize4(b["centroids"])
        self._weights = np.frombuffer(b["weights"], dtype="<f4").astype(float).tolist()
        self._touched = np.frombuffer(b["touched"], dtype="<i8").tolist()
        self._counts = np.frombuffer(b["counts"], dtype="<u4").tolist()
        self._exemplars = [None if ex is None else tuple(ex) for ex in b["exemplars"]]
        self._platforms = [_unpack_table(t) for t in b["platforms"]]
        self._terms = [_unpack_table(t) for t in b["terms"]]
        self._recent = np.frombuffer(b["recent"], dtype="<u4").tolist()
        self._consumed = dict.fromkeys(np.frombuffer(b["consumed"], dtype="<u4").tolist())
        self._merged = np.frombuffer(b["merged"], dtype="<u4").tolist()
        self.counters = {name: _unpack_table(t) for name, t in b["counters"].items()}
        self._counters_at = b["counters_at"]
        self.events = b["events"]
        self.updated_at = b["updated_at"]

    def _load_v2(self, state: dict[str, Any]) -> None:
        """Pickles written before the 4 KiB format (plain ``__dict__``, int8 or float16
        centroids, 64-bit event hashes, consumed ids as strings)."""
        self.__dict__.update(state)
        self.last_change = 0.0
        c = state.get("_centroids")
        if isinstance(c, tuple):
            self._centroids = _dequantize(c)
        elif c is not None:
            self._centroids = np.asarray(c, dtype=np.float32)
        recent = state["_recent"]
        if isinstance(recent, bytes):
            recent = np.frombuffer(recent, dtype="<u8").tolist()
        self._recent = [int(h) & 0xFFFFFFFF for h in recent]
        consumed = state["_consumed"]
        if isinstance(consumed, str):
            consumed = consumed.split(_SEP) if consumed else []
        self._consumed = dict.fromkeys(item_hash(str(i)) for i in consumed)
        self._merged = [event_hash(str(m)) for m in state.get("_merged", [])]


#: the constructor's parameters, in the order the pickled state keeps them
_PARAMS = (
    "max_interests",
    "half_life_days",
    "similarity_threshold",
    "recent_ids",
    "consumed_items",
    "max_terms",
)
#: the pickled state's size budget; a profile over it is pickled with trimmed annotations
STATE_BUDGET_BYTES = 4096
#: exemplar titles are cut to this many characters in the pickled state (they are labels only)
EXEMPLAR_TITLE_CHARS = 48
#: (terms per interest, category counters, exemplar title chars) kept at each trim level; the
#: labels use an interest's top 3 terms, so level 1 changes no label
_TRIM_LEVELS: tuple[tuple[int | None, int | None, int], ...] = (
    (None, None, EXEMPLAR_TITLE_CHARS),
    (3, 8, 24),
    (1, 4, 0),
)

_SEP = "\x1f"  # ASCII unit separator: joined consumed item ids in version-2 pickles


def _dequantize(packed: tuple[bytes, bytes, int]) -> np.ndarray:
    """int8 rows with a per-row scale, as version-2 pickles stored centroids."""
    codes, scales, cols = packed
    q = np.frombuffer(codes, dtype=np.int8).reshape(-1, cols).astype(np.float32)
    out: np.ndarray = q * np.frombuffer(scales, dtype="<f4")[:, None]
    return out


def _quantize4(m: np.ndarray) -> tuple[bytes, bytes, int]:
    """Rows to symmetric 4-bit codes (-7..7, two per byte) with a per-row float32 scale.

    Max-abs scaling makes a round trip of unchanged rows exact, so re-pickling a recovered
    profile adds no further error.

    >>> m = np.array([[0.7, -0.2, 0.1], [0.0, 0.0, 0.0]], dtype=np.float32)
    >>> [[round(float(v), 2) for v in row] for row in _dequantize4(_quantize4(m))]
    [[0.7, -0.2, 0.1], [0.0, 0.0, 0.0]]
    """
    scale = np.abs(m).max(axis=1) / 7.0
    scale[scale == 0] = 1.0
    codes = (np.clip(np.rint(m / scale[:, None]), -7, 7).astype(np.int8) + 8).astype(np.uint8)
    flat = codes.ravel()
    if flat.size % 2:
        flat = np.append(flat, np.uint8(8))
    packed = (flat[0::2] << 4) | flat[1::2]
    return packed.tobytes(), scale.astype("<f4").tobytes(), int(m.shape[1])


def _dequantize4(packed: tuple[bytes, bytes, int]) -> np.ndarray:
    data, scales, cols = packed
    b = np.frombuffer(data, dtype=np.uint8)
    flat = np.empty(b.size * 2, dtype=np.int8)
    flat[0::2] = (b >> 4).astype(np.int8) - 8
    flat[1::2] = (b & 0x0F).astype(np.int8) - 8
    sc = np.frombuffer(scales, dtype="<f4")
    out: np.ndarray = flat[: sc.size * cols].reshape(-1, cols).astype(np.float32) * sc[:, None]
    return out


def _pack_table(table: dict[str, float], keep: int | None = None) -> tuple[tuple[str, ...], bytes]:
    """Keys and float32 values; ``keep`` keeps only the largest ``keep`` entries."""
    if keep is not None and len(table) > keep:
        table = dict(sorted(table.items(), key=lambda kv: -kv[1])[:keep])
    return tuple(table), struct.pack(f"<{len(table)}f", *table.values())


def _unpack_table(packed: tuple[tuple[str, ...], bytes]) -> dict[str, float]:
    keys, values = packed
    return dict(zip(keys, struct.unpack(f"<{len(keys)}f", values), strict=True))


def _trim(table: dict[str, float], keep: int) -> None:
    if len(table) > keep:
        for k, _ in sorted(table.items(), key=lambda kv: kv[1])[: len(table) - keep]:
            del table[k]


__all__ = [
    "EXEMPLAR_TITLE_CHARS",
    "STATE_BUDGET_BYTES",
    "Interest",
    "InterestProfile",
    "event_hash",
    "item_hash",
]
