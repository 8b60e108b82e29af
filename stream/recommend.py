"""The item index and multi-interest scoring: candidates per interest, diversified, with reasons.

Pure numpy; no Faust. For each of a person's interests (heaviest first) the index returns the
items nearest to its centroid; items the person already consumed, or not offered on the target
platform, are dropped; slots are shared out across interests in proportion to their weight
(at least one each for the top interests), so one dominant taste cannot crowd out the rest.
Each recommended item names the interest it came from, that interest's label and exemplar.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .models import Item
from .profile import Interest, InterestProfile, item_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Scored:
    item_id: str
    title: str
    score: float
    interest: int
    label: str
    exemplar: str | None
    platforms: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "title": self.title,
            "score": round(self.score, 5),
            "reason": {
                "interest": self.interest,
                "label": self.label,
                "exemplar": self.exemplar,
                "platforms": list(self.platforms),
            },
        }


def top_k(scores: np.ndarray, exclude: np.ndarray, k: int) -> list[int]:
    """Rows of the ``k`` best finite scores, best first, ``exclude`` left out (ties: lower row).

    >>> top_k(np.array([0.1, 0.9, 0.5, 0.7]), np.array([1]), 2)
    [3, 2]
    """
    s = np.array(scores, dtype=np.float64, copy=True)
    if exclude.size:
        s[exclude[exclude < s.size]] = -np.inf
    n = s.size
    if n == 0:
        return []
    part = np.argpartition(-s, k - 1)[:k] if k < n else np.arange(n)
    order = part[np.lexsort((part, -s[part]))]
    return [int(r) for r in order if np.isfinite(s[r])]


#: HNSW graph settings (usearch): on 12,000 MiniLM item vectors, recall of the exact top 30 among
#: 60 candidates 0.9995 and 0.11 ms per query; 0.15-0.25 ms per insert (2-core AVX2 machine).
HNSW_CONNECTIVITY = 16
HNSW_EXPANSION_ADD = 64
HNSW_EXPANSION_SEARCH = 64
#: a graph of up to this many items is built at once on the caller's thread (~0.3 s at most);
#: a bigger one in a background thread (:meth:`ItemIndex._graph_step`)
GRAPH_BUILD_INLINE_MAX = 1_000
#: rows upserted during a background round that the caller adds itself; more go to another round
GRAPH_CATCH_UP_MAX = 256
#: the background build thread's niceness (Linux): on a busy machine it gets about a tenth of a
#: contended core, so the encoder and the event loop keep theirs. At 10,000 items the build is
#: 2-3 s of a core; at normal priority it raised a paced 2-core worker's 10-s p99 from
#: 100-150 ms to 270-315 ms for the slice it ran in (docs/performance-history.md, session 16)
GRAPH_BUILD_NICE = 10
#: rows per call into usearch in a background round: between calls the thread checks whether the
#: process is exiting (a thread still inside usearch at interpreter exit aborted the process)
GRAPH_BUILD_CHUNK = 1_000
#: set at interpreter exit: background rounds stop at their next chunk
_exiting = threading.Event()
_builders: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


@atexit.register
def _stop_background_builds(timeout_s: float = 10.0) -> None:
    """Let background graph builds end before the interpreter finalises: a daemon thread that
    came back from usearch's C++ code during finalisation was ended there and aborted the process
    (exit code 134, "terminate called without an active exception")."""
    _exiting.set()
    deadline = time.monotonic() + timeout_s
    for thread in list(_builders):
        thread.join(max(0.0, deadline - time.monotonic()))


#: what :meth:`ItemIndex.graph_state` may say
GRAPH_STATES = ("off", "waiting", "building", "ready")


def _add_rows(graph: Any, first: int, vectors: np.ndarray) -> None:
    """Rows ``first, first + 1, …`` into ``graph`` (none of them in it yet), in one call."""
    graph.add(np.arange(first, first + len(vectors), dtype=np.uint64), vectors, threads=1)


def lower_thread_priority(nice: int) -> bool:
    """Make the calling thread (only it) ``nice`` on Linux, where a thread has its own niceness
    and raising it needs no privilege; elsewhere, or if refused, leave it. True if applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError:
        return False
    return True


def _new_graph(dim: int) -> Any:
    from usearch.index import Index

    return Index(
        ndim=dim,
        metric="ip",
        dtype="f32",
        connectivity=HNSW_CONNECTIVITY,
        expansion_add=HNSW_EXPANSION_ADD,
        expansion_search=HNSW_EXPANSION_SEARCH,
    )


def _dot(rows: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``rows @ vectors.T`` as float32: up to three rows, one matrix-vector product each; more,
    one matrix product over the rows padded with zeros to a multiple of four.

    OpenBLAS's single-precision matrix product is slow for 2, 3, 5, 6 or 7 rows (its kernel
    takes rows four at a time): against 6,000 MiniLM vectors on these CPUs, one thread, 3 rows
    took 2.0-2.7 ms as one product, 1.8 padded to 4, 0.7-0.8 as three matrix-vector products
    (12,000 items: 5.1-8.3 / 6.7 / 4.5-7.8 ms); 7 rows 5.3 ms, padded 2.1 (timings of session 15,
    docs/performance-history.md; ``crossprofile bench index`` prints this kernel's table). Most
    profiles have one to three interests.
    """
    m = len(rows)
    if m <= 3:
        out = np.empty((m, len(vectors)), dtype=np.float32)
        for i, row in enumerate(rows):
            np.matmul(vectors, row, out=out[i])
        return out
    pad = -m % 4
    if pad:
        rows = np.concatenate([rows, np.zeros((pad, rows.shape[1]), dtype=rows.dtype)])
    return np.asarray(rows @ vectors.T, dtype=np.float32)[:m]


class ItemIndex:
    """Inner-product index over L2-normalised item embeddings, grown in place.

    Exact by default: every item is scored. With ``ann_min_items`` set, once the index holds
    that many items an HNSW graph (:mod:`usearch`) is built beside the vectors (a big one in a
    background thread, :meth:`_graph_step`) and then kept current, and a recommendation scores
    only candidates: each interest's nearest neighbours in the graph and the rows with the
    highest ``prior``, rescored exactly. Scoring every item reads every
    vector, linear in the catalogue: 0.7-3.4 ms per recommendation at 12,000 items on these
    CPUs and 3.6-13 ms at 48,000, against 0.6-2.5 and 0.8-3.5 ms from the graph's candidates
    (``crossprofile bench index``; below ~10,000 items the graph costs more than it saves).
    Where too few candidates survive the filters (consumed items, another platform's items),
    every item is scored instead.
    """

    def __init__(
        self,
        dim: int,
        capacity: int = 1024,
        *,
        ann_min_items: int = 0,
        background_build: bool = True,
    ) -> None:
        self.dim = dim
        self.ann_min_items = ann_min_items
        #: build a big graph in a background thread (see :meth:`_graph_step`); an offline run
        #: (evaluation, a benchmark of the pure steps) builds it at once, to be reproducible
        self.background_build = background_build
        #: recommendations answered from HNSW candidates, and those that had to score every
        #: item after all (too few candidates survived the filters)
        self.ann_answers = 0
        self.ann_fallbacks = 0
        self._ann: Any = None  # the HNSW graph, once it holds every row (searched, kept current)
        # A graph being built, off the caller's thread: rows [0, _graph_rows) are in it or being
        # added by ``_builder``; rows whose vector changed meanwhile are re-added at the end.
        self._building: Any = None
        self._builder: threading.Thread | None = None
        self._build_error: BaseException | None = None
        self._build_started = 0.0
        self._graph_rows = 0
        self._moved: set[int] = set()
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._items: list[Item] = []
        self._row: dict[str, int] = {}
        self._row_by_hash: dict[int, int] = {}  # item_hash -> row (profiles keep hashes)
        # per platform, a score per row to add: 0 where the item may be shown there, -inf
        # elsewhere (so a ranking filters in the add that blends its prior in); kept current by
        # upsert (building one from the items took 3 ms per recommendation at 10,000 items)
        self._blocked: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row

    def get(self, item_id: str) -> Item | None:
        row = self._row.get(item_id)
        return None if row is None else self._items[row]

    def row(self, item_id: str) -> int | None:
        """The item's row: rows are numbered in first-upsert order and never move."""
        return self._row.get(item_id)

    def rows(self, item_ids: Iterable[str]) -> np.ndarray:
        """The rows of the ids this index holds, in the ids' order (unknown ids left out)."""
        found = (self._row.get(i) for i in item_ids)
        return np.array([r for r in found if r is not None], dtype=np.int64)

    def rows_by_hash(self, hashes: Iterable[int]) -> np.ndarray:
        """The rows of :func:`stream.profile.item_hash` values, in order (unknown left out; of
        two ids with one hash, the first upserted)."""
        found = (self._row_by_hash.get(h) for h in hashes)
        return np.array([r for r in found if r is not None], dtype=np.int64)

    def consumed_rows(
        self, profile: InterestProfile | None, exclude: Iterable[str] = ()
    ) -> np.ndarray:
        """Rows not to recommend to ``profile``'s person: what they consumed, and ``exclude``."""
        own = None if profile is None else self.rows_by_hash(profile.consumed_hashes())
        return _rows_union(self.rows(exclude), own)

    def vector(self, item_id: str) -> np.ndarray | None:
        row = self._row.get(item_id)
        return None if row is None else self._vectors[row]

    def upsert(self, item: Item, vector: np.ndarray) -> None:
        row = self._row.get(item.id)
        moved = True  # the row's vector changes (a new item, or a new text for a known one)
        if row is None:
            row = len(self._items)
            if row == self._vectors.shape[0]:
                grown = np.zeros((row * 2, self.dim), dtype=np.float32)
                grown[:row] = self._vectors
                self._vectors = grown
            self._items.append(item)
            self._row[item.id] = row
            self._row_by_hash.setdefault(item_hash(item.id), row)
        else:
            old = self._items[row]
            if old.platforms and item.platforms:  # platforms accumulate; empty means "everywhere"
                merged = tuple(dict.fromkeys(old.platforms + item.platforms))
                item = Item(
                    item.id, item.title, item.text, item.category, item.tags, item.price, merged
                )
            self._items[row] = item
            # the same vector again (an item this worker published coming back on the items
            # topic, or seen on another platform): the graph keeps its node — re-adding it cost
            # ~2.5 % of the worker's event loop in a Zipf stream
            moved = not np.array_equal(self._vectors[row], vector)
        if moved:
            self._vectors[row] = vector
            if self._ann is not None:
                self._graph_put(self._ann, row)
            elif self._building is not None and row < self._graph_rows:
                self._moved.add(row)  # its old vector may be in the graph being built
        self._update_blocked(row, item)
        self._graph_step()

    # --- the HNSW graph ------------------------------------------------------------------------
    def _graph_put(self, graph: Any, row: int) -> None:
        key = np.uint64(row)
        if graph.contains(key):  # a new text for a known item: move its node
            graph.remove(key)
        graph.add(key, self._vectors[row], threads=1)

    def graph_state(self) -> str:
        """``off`` (exact only), ``waiting`` (fewer items than ``ann_min_items``), ``building``
        or ``ready`` (recommendations take their candidates from the graph)."""
        if self.ann_min_items <= 0:
            return "off"
        if self._ann is not None:
            return "ready"
        return "building" if self._building is not None else "waiting"

    def wait_for_graph(self, timeout: float | None = None) -> bool:
        """Wait for a background build to end and take the graph into use; True once ready."""
        if self._builder is not None:
            self._builder.join(timeout)
        self._graph_step()
        return self._ann is not None

    def _graph_step(self) -> None:
        """Build the graph once the index reaches ``ann_min_items`` items, without stalling the
        caller: inserting costs 0.15-0.35 ms per item (2-core AVX2), so 10,000 items at once
        would stop a worker's event loop for 2-3 s. Up to ``GRAPH_BUILD_INLINE_MAX`` items are
        added here; more go to a background thread in one bulk call (usearch releases the GIL
        there) while recommendations stay exact. Each call here checks on it: a finished round
        re-adds the rows whose vectors changed meanwhile, hands rows upserted since to another
        round while more than ``GRAPH_CATCH_UP_MAX`` are left, then adds the rest and takes
        the graph into use. Below the threshold no graph is kept at all (inserts into a graph
        no recommendation used were ~6 % of a paced worker's event loop)."""
        if self.ann_min_items <= 0 or self._ann is not None:
            return
        n = len(self._items)
        if self._building is None:
            if n < self.ann_min_items:
                return
            graph = _new_graph(self.dim)
            if not self.background_build or n <= GRAPH_BUILD_INLINE_MAX:
                _add_rows(graph, 0, self._vectors[:n])
                self._graph_rows, self._ann = n, graph
                return
            self._building, self._build_started = graph, time.monotonic()
            log.info("item index: building the HNSW graph of %d items in the background", n)
            self._graph_round(0, n)
            return
        if self._builder is not None and self._builder.is_alive():
            return
        self._builder = None
        if self._build_error is not None:  # recommendations stay exact; the next step retries
            log.error("item index: building the HNSW graph failed: %r", self._build_error)
            self._building, self._build_error, self._graph_rows = None, None, 0
            self._moved.clear()
            return
        graph = self._building
        for row in sorted(self._moved):
            self._graph_put(graph, row)
        self._moved.clear()
        if n - self._graph_rows > GRAPH_CATCH_UP_MAX:
            self._graph_round(self._graph_rows, n)
            return
        if n > self._graph_rows:
            _add_rows(graph, self._graph_rows, self._vectors[self._graph_rows : n])
        self._graph_rows, self._ann, self._building = n, graph, None
        log.info(
            "item index: HNSW graph of %d items ready after %.1f s",
            n,
            time.monotonic() - self._build_started,
        )

    def _graph_round(self, lo: int, hi: int) -> None:
        """Add rows ``[lo, hi)`` (their vectors as of now) to the graph being built, in a thread."""
        vectors = self._vectors[lo:hi].copy()  # the array may grow (be replaced) meanwhile
        graph = self._building

        def add() -> None:
            lower_thread_priority(GRAPH_BUILD_NICE)  # yield to the encoder and the event loop
            try:
                for start in range(0, len(vectors), GRAPH_BUILD_CHUNK):
                    if _exiting.is_set():
                        return  # the process is exiting; the graph is not needed any more
                    _add_rows(graph, lo + start, vectors[start : start + GRAPH_BUILD_CHUNK])
            except BaseException as exc:  # reported on the caller's thread by _graph_step
                self._build_error = exc

        self._graph_rows = hi
        self._builder = threading.Thread(target=add, name="hnsw-build", daemon=True)
        _builders.add(self._builder)
        self._builder.start()

    def _update_blocked(self, row: int, item: Item) -> None:
        for platform, blocked in self._blocked.items():
            if row >= blocked.size:
                blocked = self._blocked[platform] = np.resize(blocked, self._vectors.shape[0])
            blocked[row] = 0.0 if not item.platforms or platform in item.platforms else -np.inf

    def blocked(self, platform: str) -> np.ndarray:
        """A score per row (``len(self)`` of them) to add: 0 where the item may be shown on
        ``platform``, -inf elsewhere."""
        n = len(self._items)
        blocked = self._blocked.get(platform)
        if blocked is None:
            shown = np.fromiter(
                (not it.platforms or platform in it.platforms for it in self._items), bool, n
            )
            blocked = np.full(self._vectors.shape[0], -np.inf, dtype=np.float32)
            blocked[:n][shown] = 0.0
            self._blocked[platform] = blocked
        return blocked[:n]

    def allowed(self, platform: str) -> np.ndarray:
        """Boolean per row (``len(self)`` of them): may the item be shown on ``platform``?"""
        shown: np.ndarray = self.blocked(platform) == 0
        return shown

    def recommend(
        self,
        profile: InterestProfile,
        k: int = 10,
        *,
        platform: str | None = None,
        now: int | None = None,
        max_interests: int = 8,
        exclude: Iterable[str] = (),
        prior: np.ndarray | None = None,
        content_weight: float = 1.0,
        dots: np.ndarray | None = None,
    ) -> list[Scored]:
        """Top ``k`` for ``profile``, at most ``max_interests`` interests sharing the slots.

        ``exclude`` adds item ids to drop besides the profile's consumed items. ``prior`` is an
        optional per-row score (rows in upsert order, length ≥ ``len(self)``; e.g.
        :meth:`Signals.prior`) added to every interest's ``content_weight`` × cosine, so
        collaborative and popularity evidence can be blended into the per-interest lists
        before the slots are shared out. ``dots``, when given, are the cosines of
        :meth:`active_interests` against every row already computed (one matrix product for
        many profiles, :func:`recommend_blended_many`); they are used when every item is scored.
        """
        n = len(self._items)
        interests = self.active_interests(profile, now, max_interests)
        if n == 0 or not interests:
            return []
        blocked = None if platform is None else self.blocked(platform)
        centroids = np.stack([i.centroid for i in interests]).astype(np.float32, copy=False)
        p = None if prior is None else np.asarray(prior, dtype=np.float32)
        dropped = self.consumed_rows(profile, exclude)
        pool = min(n, k * 3)
        cols = None
        if not self.exact():
            cols = self._candidates(centroids, p, n, pool + min(int(dropped.size), pool))
        given = dots if dots is not None and dots.shape == (len(interests), n) else None
        sims = self._scores(centroids, content_weight, p, blocked, dropped, n, cols, given)
        if cols is not None and int(np.isfinite(sims).sum(axis=1).min()) < pool:
            cols = None  # the filters left too few candidates: score every item
            sims = self._scores(centroids, content_weight, p, blocked, dropped, n, None, given)
            self.ann_fallbacks += 1
        elif cols is not None:
            self.ann_answers += 1
        rows = np.arange(n) if cols is None else cols
        quotas = _quotas([i.weight for i in interests], k)
        total = sum(i.weight for i in interests)
        width = sims.shape[1]
        # each interest's best ``pool`` columns, best first (one numpy call per step for all
        # interests: per-row calls were ~10 % of a recommendation)
        neg = -sims
        if pool < width:
            top = np.argpartition(neg, pool - 1, axis=1)[:, :pool]
        else:
            top = np.broadcast_to(np.arange(width), neg.shape)
        each = np.arange(neg.shape[0])[:, None]  # plain indexing: take_along_axis cost 3x more
        best = neg[each, top]
        order = np.argsort(best, axis=1)
        top = top[each, order]
        keep = np.isfinite(best[each, order])
        ranked: list[list[int]] = [t[f].tolist() for t, f in zip(top, keep, strict=True)]
        out: list[Scored] = []
        taken: set[int] = set()
        cursor = [0] * len(interests)
        reasons = [
            (i.label, i.exemplar_title or i.exemplar_id, tuple(sorted(i.platforms)))
            for i in interests
        ]
        # round-robin over interests by quota, then fill from the best remaining
        for rnd in range(k):
            for m, interest in enumerate(interests):
                if len(out) >= k:
                    break
                if rnd >= quotas[m]:
                    continue
                self._take(m, interest, reasons[m], ranked, cursor, taken, sims, rows, total, out)
        m = 0
        while len(out) < k and any(c < len(r) for c, r in zip(cursor, ranked, strict=True)):
            self._take(m, interests[m], reasons[m], ranked, cursor, taken, sims, rows, total, out)
            m = (m + 1) % len(interests)
        return out

    @staticmethod
    def active_interests(
        profile: InterestProfile, now: int | None = None, max_interests: int = 8
    ) -> list[Interest]:
        """The interests a recommendation shares its slots among: the heaviest
        ``max_interests`` with a positive weight at ``now``."""
        return [i for i in profile.interests(now)[:max_interests] if i.weight > 0]

    def exact(self) -> bool:
        """Whether a recommendation scores every item now (no HNSW graph in use yet)."""
        self._graph_step()
        return self._ann is None

    def cosines(self, centroids: np.ndarray) -> np.ndarray:
        """(rows of ``centroids``, items) cosines against every item, as one matrix product."""
        return _dot(np.asarray(centroids, dtype=np.float32), self._vectors[: len(self._items)])

    def _candidates(
        self, centroids: np.ndarray, prior: np.ndarray | None, n: int, count: int
    ) -> np.ndarray:
        """Sorted rows to score: each interest's ``count`` nearest items in the HNSW graph, and
        the ``count`` rows with the highest positive ``prior`` (collaborative evidence can lift
        an item that is far from every centroid)."""
        count = min(n, count)
        found = self._ann.search(centroids, count, threads=1)
        if hasattr(found, "counts"):  # BatchMatches: rows padded past each query's count
            keys = np.asarray(found.keys)
            parts = [keys[i, :c].astype(np.int64) for i, c in enumerate(found.counts)]
        else:  # one query: Matches, already trimmed
            parts = [np.asarray(found.keys).astype(np.int64)]
        if prior is not None:
            best = (prior if prior.ndim == 1 else prior.max(axis=0))[:n]
            top = np.argpartition(-best, count - 1)[:count] if count < n else np.arange(n)
            parts.append(top[best[top] > 0])
        cols = np.unique(np.concatenate(parts))
        return cols[cols < n]

    def _scores(
        self,
        centroids: np.ndarray,
        content_weight: float,
        prior: np.ndarray | None,
        blocked: np.ndarray | None,
        dropped: np.ndarray,
        n: int,
        cols: np.ndarray | None,
        dots: np.ndarray | None = None,
    ) -> np.ndarray:
        """(interests, columns) blended scores: a column per row ``< n``, or per ``cols`` entry;
        -inf where the item may not be shown (``blocked``: :meth:`blocked`) or was consumed
        (``dropped`` rows). ``dots``: the cosines against every row ``< n``, already computed.

        The prior, the platform's filter and the consumed rows are summed into one row of
        biases first, added to every interest's scores at once: a profile of m interests costs
        one (m, columns) pass instead of three."""
        sel: slice | np.ndarray = slice(0, n) if cols is None else cols
        if dots is not None and cols is None:
            sims = dots * np.float32(content_weight)
        else:
            if content_weight != 1.0:
                centroids = centroids * np.float32(content_weight)
            sims = _dot(centroids, self._vectors[sel])
        bias = None if prior is None else prior[..., sel]
        if blocked is not None:
            bias = blocked[sel] if bias is None else bias + blocked[sel]
        if dropped.size:  # written into: a copy of its own (a slice of the prior is a view)
            bias = np.zeros(sims.shape[1], np.float32) if bias is None else np.array(bias)
            bias[..., dropped if cols is None else np.isin(cols, dropped)] = -np.inf
        if bias is not None:
            sims += bias
        return sims

    def top_by_score(
        self,
        scores: np.ndarray,
        k: int,
        *,
        exclude: Iterable[str] = (),
        exclude_rows: np.ndarray | None = None,
        platform: str | None = None,
        label: str = "popular",
    ) -> list[Scored]:
        """The ``k`` rows with the highest positive ``scores`` (one per row; ties: lower row),
        as :class:`Scored` with reason ``label`` — recommendations without an interest;
        ``exclude`` (ids) and ``exclude_rows`` left out."""
        n = min(len(self._items), len(scores))
        s = np.array(scores[:n], dtype=np.float64)
        s[s <= 0] = -np.inf
        if platform is not None:
            s += self.blocked(platform)[:n]
        return [
            Scored(
                item_id=self._items[r].id,
                title=self._items[r].title or self._items[r].id,
                score=float(s[r]),
                interest=0,
                label=label,
                exemplar=None,
                platforms=(),
            )
            for r in top_k(s, _rows_union(self.rows(exclude), exclude_rows), k)
        ]

    def _take(
        self,
        m: int,
        interest: Interest,
        reason: tuple[str, str | None, tuple[str, ...]],
        ranked: list[list[int]],
        cursor: list[int],
        taken: set[int],
        sims: np.ndarray,
        rows: np.ndarray,
        total: float,
        out: list[Scored],
    ) -> None:
        lst = ranked[m]  # columns of sims; rows[column] is the item's row
        while cursor[m] < len(lst) and lst[cursor[m]] in taken:
            cursor[m] += 1
        if cursor[m] >= len(lst):
            return
        col = lst[cursor[m]]
        cursor[m] += 1
        taken.add(col)
        item = self._items[int(rows[col])]
        share = interest.weight / total if total > 0 else 0.0
        label, exemplar, platforms = reason
        out.append(
            Scored(
                item_id=item.id,
                title=item.title or item.id,
                score=float(sims[m, col]) * (0.5 + 0.5 * share),
                interest=interest.index,
                label=label,
                exemplar=exemplar,
                platforms=platforms,
            )
        )


_MS_PER_DAY = 86_400_000.0

#: events per generation of :class:`Signals`' replay memory (two generations are kept: 100,000
#: events, a few MB; a replay comes within the records since the last commit, far fewer)
COUNTED_EVENTS_KEPT = 50_000


def event_hash(event_id: str) -> int:
    """64-bit hash of an event id (BLAKE2b): 100,000 remembered events collide with odds of
    about 3e-10, where 32 bits would give about one collision.

    >>> event_hash("e-1") != event_hash("e-2")
    True
    """
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")


class Signals:
    """Collaborative and popularity evidence over an :class:`ItemIndex`'s rows, learned online.

    Global state (one per index, not per person), fed every item event before the person's
    profile learns it:

    - **co-visitation**: each new item is counted together with the person's last ``window``
      consumed items (:meth:`InterestProfile.consumed_hashes`), in both directions, the one
      ``d`` steps back with weight ``window_decay ** (d - 1)``;
    - **popularity**: interactions per item, decayed with ``half_life_days`` in event time.

    :meth:`prior` turns them into one score per row for a person: the co-visitation rows of their
    last ``recent`` items (the latest weighing most, ``recency`` per step back), normalised
    cosine-style (``co(a, b) / (n(a)^alpha n(b)^(1-alpha))``) and scaled to a maximum of 1, times
    ``collaborative``; plus popularity scaled to a maximum of 1, times ``popularity``.
    :meth:`ItemIndex.recommend` adds it to ``content`` × each interest's cosine. The defaults are
    the values chosen on the first 80 % of MovieLens-1M (``docs/quality.md``).

    The matrix is dense (``max_items``² float32, 400 MB at the default 10,000), reserved whole
    at construction: ``np.zeros`` of that size is virtual memory whose pages become resident as
    co-visits are first written, so memory grows with the evidence and nothing is ever copied.
    (Until session 16 it doubled as items arrived; the copy from 8,192 to 10,000 rows took
    ~0.4 s, one stall of the worker's event loop.) Items past ``max_items`` get content scores
    only (no popularity, no co-visits). A catalogue of hundreds of thousands of items needs a
    sparse top-neighbour table instead.

    In the stream, :meth:`observation` is taken where the person's profile lives and shared with
    every worker through the ``<p>.covisits`` topic, where :meth:`count` applies it — so every
    worker holds the same global evidence, and a restarted worker rebuilds it from the topic.

    >>> from stream.models import Item
    >>> index, signals, alice = ItemIndex(2), Signals(popularity=0.5), InterestProfile()
    >>> for it in ("a", "b", "c"):
    ...     index.upsert(Item(it), np.array([1.0, 0.0], dtype=np.float32))
    >>> for n, it in enumerate(["a", "b"]):  # alice: a, then b
    ...     signals.learn(alice, index, it, ts=n)
    ...     _ = alice.learn({"event_id": str(n), "item_id": it, "ts": n})
    >>> bob = InterestProfile()
    >>> bob.learn_one({"event_id": "x", "item_id": "a", "ts": 2})
    >>> [round(float(x), 2) for x in signals.prior(bob, index)]  # b went with a
    [0.5, 1.5, 0.0]
    """

    def __init__(
        self,
        *,
        window: int = 20,
        window_decay: float = 0.9,
        recent: int = 20,
        recency: float = 0.8,
        alpha: float = 0.7,
        half_life_days: float = 30.0,
        collaborative: float = 1.0,
        popularity: float = 0.3,
        content: float = 0.3,
        max_items: int = 10_000,
    ) -> None:
        if window < 1 or recent < 1 or not 0 < recency <= 1 or not 0 <= alpha <= 1:
            raise ValueError("need window >= 1, recent >= 1, 0 < recency <= 1, 0 <= alpha <= 1")
        if half_life_days <= 0:
            raise ValueError("half_life_days must be greater than 0")
        self.window = window
        self.window_decay = window_decay
        self._steps = (window_decay ** np.arange(window, dtype=np.float32))[::-1].copy()
        self.recent = recent
        self.recency = recency
        self.alpha = alpha
        self.half_life_days = half_life_days
        self.collaborative = collaborative
        self.popularity = popularity
        self.content = content
        self.max_items = max(1, max_items)
        cap = self.max_items  # every row at once: untouched pages of zeros cost no memory
        self._co = np.zeros((cap, cap), dtype=np.float32)
        self._count = np.zeros(cap, dtype=np.float64)
        self._norm = np.ones(cap, dtype=np.float32)  # max(count, 1) ** (1 - alpha), kept current
        self._pop = np.zeros(cap, dtype=np.float64)
        # the popularity share of every prior until the next count: (rows, scores)
        self._pop_prior: tuple[int, np.ndarray] | None = None
        self._t0: int | None = None
        # hashes of the events counted lately (two generations of sets, the older one dropped
        # when the newer fills): a replayed record comes soon after the first, from the last
        # commit on, so a bounded memory of recent events is enough to count it once.
        self._counted: set[int] = set()
        self._counted_before: set[int] = set()
        #: records not counted because their event had been counted already
        self.replays_skipped = 0

    def config(self) -> dict[str, float | int]:
        """The parameters this instance was built with (what an evaluation report records)."""
        return {
            "window": self.window,
            "window_decay": self.window_decay,
            "recent": self.recent,
            "recency": self.recency,
            "alpha": self.alpha,
            "half_life_days": self.half_life_days,
            "collaborative": self.collaborative,
            "popularity": self.popularity,
            "content": self.content,
            "max_items": self.max_items,
        }

    def learn(self, profile: InterestProfile, index: ItemIndex, item_id: str, ts: int) -> None:
        """Count one item event of ``profile``'s person (call before ``profile`` learns it)."""
        self.count(index, self.observation(profile, item_id, ts))

    def observation(
        self, profile: InterestProfile, item_id: str, ts: int, event_id: str | None = None
    ) -> dict[str, Any]:
        """What :meth:`count` needs about one item event, taken from the person's profile before
        it learns the event — the record the stream shares between workers (``<p>.covisits``).
        With ``event_id``, the record carries a 64-bit hash of it and :meth:`count` applies the
        event once."""
        repeat = profile.has_consumed(item_id)
        recent = [] if repeat else profile.consumed_hashes(self.window)
        obs: dict[str, Any] = {"item": item_id, "ts": ts, "repeat": repeat, "recent": recent}
        if event_id is not None:
            obs["event"] = event_hash(event_id)
        return obs

    def _first_time(self, event: int) -> bool:
        """False for an event counted among the last ``2 × COUNTED_EVENTS_KEPT`` (a replay)."""
        if event in self._counted or event in self._counted_before:
            return False
        self._counted.add(event)
        if len(self._counted) >= COUNTED_EVENTS_KEPT:
            self._counted_before, self._counted = self._counted, set()
        return True

    def count(self, index: ItemIndex, obs: Mapping[str, Any]) -> bool:
        """Count one :meth:`observation`; False when its item is not in ``index`` (yet) or past
        ``max_items`` rows (those items get content and no collaborative evidence)."""
        item_id, ts = str(obs["item"]), int(obs["ts"])
        row = index.row(item_id)
        if row is None:
            return False
        if row >= self.max_items:
            return True
        event = obs.get("event")
        if event is not None and not self._first_time(int(event)):
            self.replays_skipped += 1
            return True  # the same event's record again (a replay after a crash): counted once
        if self._t0 is None:
            self._t0 = ts
        x = (ts - self._t0) / (self.half_life_days * _MS_PER_DAY)
        if x > 50:  # rebase the popularity scale before it overflows
            self._pop *= 2.0**-x
            self._t0, x = ts, 0.0
        self._pop[row] += 2.0**x
        self._pop_prior = None
        if obs.get("repeat"):
            return True  # a repeat: popularity only
        self._count[row] += 1.0
        self._norm[row] = self._count[row] ** (1.0 - self.alpha)
        recent = _recent_rows(index, obs.get("recent") or ())
        recent = recent[recent < self.max_items]
        if recent.size:
            w = self._steps[-recent.size :] if self.window_decay != 1.0 else 1.0
            self._co[row, recent] += w
            self._co[recent, row] += w
        return True

    def prior(self, profile: InterestProfile | None, index: ItemIndex) -> np.ndarray:
        """One score per index row for ``profile``'s person (popularity alone without one)."""
        n = len(index)
        m = min(n, self.max_items)  # rows with collaborative evidence
        out = self._popularity(n).copy()
        if profile is None or not self.collaborative:
            return out
        rows = index.rows_by_hash(profile.consumed_hashes(self.recent)[::-1])  # latest first
        rows = rows[rows < m]
        if rows.size == 0:
            return out
        w = self.recency ** np.arange(rows.size) / np.power(
            np.maximum(self._count[rows], 1.0), self.alpha
        )
        co = w.astype(np.float32) @ self._co[rows, :m]
        co /= self._norm[:m]
        top = float(co.max())
        if top > 0:
            out[:m] += (self.collaborative / top) * co
        return out

    def _popularity(self, n: int) -> np.ndarray:
        """The popularity share of :meth:`prior` over ``n`` rows: the same for every person, so
        computed once per count, not once per recommendation."""
        if self._pop_prior is not None and self._pop_prior[0] == n:
            return self._pop_prior[1]
        m = min(n, self.max_items)
        out = np.zeros(n, dtype=np.float64)
        pop = self._pop[:m]
        top = float(pop.max()) if n else 0.0
        if top > 0 and self.popularity:
            out[:m] += (self.popularity / top) * pop
        self._pop_prior = (n, out)
        return out


def covisit_record(observations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One ``<p>.covisits`` record for a batch's :meth:`Signals.observation` records: one
    produce per batch instead of one per item event (each Faust send costs the worker's event
    loop ~0.1 ms)."""
    return {"observations": list(observations)}


def covisit_observations(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The observations in a ``<p>.covisits`` record: a batch (:func:`covisit_record`) or, as
    records written before batching were, a single observation.

    >>> covisit_observations({"item": "a", "ts": 1, "recent": []})
    [{'item': 'a', 'ts': 1, 'recent': []}]
    >>> covisit_observations(covisit_record([{"item": "a"}, {"item": "b"}]))
    [{'item': 'a'}, {'item': 'b'}]
    """
    if "observations" in record:
        return [dict(o) for o in record["observations"]]
    return [dict(record)]


def recommend_blended(
    index: ItemIndex,
    profile: InterestProfile | None,
    signals: Signals,
    k: int,
    *,
    now: int | None = None,
    platform: str | None = None,
    exclude: Iterable[str] = (),
    dots: np.ndarray | None = None,
) -> list[Scored]:
    """What the stream recommends (and ``crossprofile evaluate`` measures): the person's interests
    by cosine × ``signals.content`` plus the :meth:`Signals.prior`, shared across interests by
    :meth:`ItemIndex.recommend`; a person with no positive interest yet gets the prior alone
    (reason label ``popular``), never an item they consumed or one with no evidence at all."""
    prior = signals.prior(profile, index)
    if profile is not None:
        scored = index.recommend(
            profile,
            k,
            platform=platform,
            now=now,
            exclude=exclude,
            prior=prior,
            content_weight=signals.content,
            dots=dots,
        )
        if scored:
            return scored
    return index.top_by_score(
        prior, k, exclude_rows=index.consumed_rows(profile, exclude), platform=platform
    )


def recommend_blended_many(
    index: ItemIndex,
    requests: Sequence[tuple[InterestProfile | None, str | None, int | None]],
    signals: Signals,
    k: int,
) -> list[list[Scored]]:
    """:func:`recommend_blended` for several ``(profile, platform, now)`` requests at once.

    Where every item is scored (no HNSW candidates yet), the cosines of all the requests'
    interests come from one matrix product instead of one pass over the item vectors per
    request: the vectors (1.5 MB per 1,000 items) are read once, not once per person. The
    results are those of :func:`recommend_blended` on each request.
    """
    dots: list[np.ndarray | None] = [None] * len(requests)
    if index.exact() and len(requests) > 1 and len(index):
        blocks: list[np.ndarray] = []
        spans: list[tuple[int, int, int]] = []
        at = 0
        for r, (profile, _platform, now) in enumerate(requests):
            if profile is None:
                continue
            interests = index.active_interests(profile, now)
            if interests:
                blocks.append(np.stack([i.centroid for i in interests]))
                spans.append((r, at, at + len(interests)))
                at += len(interests)
        if blocks:
            everything = index.cosines(np.concatenate(blocks))
            for r, a, b in spans:
                dots[r] = everything[a:b]
    return [
        recommend_blended(index, profile, signals, k, now=now, platform=platform, dots=d)
        for (profile, platform, now), d in zip(requests, dots, strict=True)
    ]


def _rows_union(a: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    return a if b is None or not b.size else (np.concatenate([a, b]) if a.size else b)


def _recent_rows(index: ItemIndex, recent: Iterable[Any]) -> np.ndarray:
    """Rows of a co-visit record's ``recent`` items: item hashes (ints), or item ids (strings)
    in records written before profiles kept hashes."""
    seq = list(recent)
    if seq and isinstance(seq[0], str):
        return index.rows(seq)
    return index.rows_by_hash(int(h) for h in seq)


def _quotas(weights: list[float], k: int) -> list[int]:
    """Share ``k`` slots in proportion to weight, at least one per interest while slots last.

    >>> _quotas([6.0, 3.0, 1.0], 10)
    [6, 3, 1]
    """
    total = sum(weights) or 1.0
    quotas = [max(1, round(k * w / total)) for w in weights]
    while sum(quotas) > k:
        quotas[quotas.index(max(quotas))] -= 1
    return quotas


__all__ = ["ItemIndex", "Scored", "Signals", "recommend_blended", "recommend_blended_many", "top_k"]
