"""The prequential protocol (test, then learn) and its metrics.

Events are replayed in time order. For every positive event (rating ≥ 4) whose item the person has
not consumed yet, each method is first asked for the person's top ``k`` among the catalogue seen
so far, minus what the person already consumed; the held-out item scores a hit when it is in the
list, and NDCG@k = 1 / log2(rank + 1) (one relevant item, so IDCG = 1). Then every event —
positive or not — is learned by the method with its signal. Nothing about an event is visible to
a method before it is asked about it: the catalogue grows, and the consumed set is updated, only
after the question.

>>> ndcg_at(0), round(ndcg_at(2), 4), ndcg_at(None)
(1.0, 0.5, 0.0)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .data import EvalData

K = 10


def ndcg_at(rank: int | None) -> float:
    """NDCG of one relevant item found at 0-based ``rank`` (None: not in the list)."""
    return 0.0 if rank is None else 1.0 / math.log2(rank + 2)


class Method(Protocol):
    """A recommender under test. ``person`` is the id the run's identity gives the event."""

    name: str

    def recommend(self, i: int, person: int, n: int, exclude: np.ndarray, k: int) -> Sequence[int]:
        """Top-``k`` catalogue rows (< ``n``) for ``person`` at event ``i``, none in ``exclude``."""
        ...

    def learn(self, i: int, person: int) -> None:
        """Learn event ``i``, which the person's identity puts on ``person``."""
        ...


@dataclass(slots=True)
class Tally:
    """Running sums for one slice of the asked events."""

    events: int = 0
    hits: int = 0
    ndcg: float = 0.0

    def add(self, rank: int | None) -> None:
        self.events += 1
        self.hits += rank is not None
        self.ndcg += ndcg_at(rank)

    def report(self) -> dict[str, Any]:
        n = max(self.events, 1)
        return {
            "events": self.events,
            "recall@10": round(self.hits / n, 5),
            "ndcg@10": round(self.ndcg / n, 5),
        }


@dataclass(slots=True)
class Result:
    """Per-event outcomes of one method over one run, and the totals it reports."""

    name: str
    asked: list[int] = field(default_factory=list)  # event indexes that were asked
    ranks: list[int] = field(default_factory=list)  # rank of the held-out item, -1 for a miss
    seconds_recommend: float = 0.0
    seconds_learn: float = 0.0
    learned: int = 0
    seconds_tail: float = 0.0  # recommend + learn on the report slice (the last 1 - head)
    learned_tail: int = 0
    recommended: set[int] = field(default_factory=set)  # rows ever recommended
    recommended_tail: set[int] = field(default_factory=set)  # ... in the report slice


def split_index(n_events: int, head: float = 0.8) -> int:
    """First event index of the report slice: the last ``1 - head`` of the time-ordered stream."""
    return min(n_events, math.ceil(n_events * head))


def asked_events(data: EvalData, persons: Sequence[int]) -> list[bool]:
    """Which events are asked about: positive, and the item new to that person."""
    seen: dict[int, set[int]] = {}
    out = []
    for i, person in enumerate(persons):
        s = seen.setdefault(person, set())
        row = data.item[i]
        out.append(data.positive[i] and row not in s)
        s.add(row)
    return out


def run_prequential(
    data: EvalData,
    method: Method,
    *,
    persons: Sequence[int] | None = None,
    k: int = K,
    head: float = 0.8,
    only: Callable[[int], bool] | None = None,
    end: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Result:
    """Replay ``data`` through ``method``: test (for asked events), then learn (every event).

    ``persons`` maps each event to the person id the method sees (default: the stream identity,
    ``data.person``); ``only`` restricts which asked events are asked (the rest are only learned);
    ``end`` stops the replay before that event (tuning on the head of the stream).
    """
    who = data.person if persons is None else persons
    consumed: dict[int, list[int]] = {}
    consumed_set: dict[int, set[int]] = {}
    n_seen = 0  # catalogue rows are numbered by first appearance: seen rows are < n_seen
    result = Result(method.name)
    cut = split_index(len(data), head)
    clock = time.perf_counter
    for i in range(len(data) if end is None else min(end, len(data))):
        person = who[i]
        row = data.item[i]
        mine = consumed_set.get(person)
        if mine is None:
            mine = consumed_set[person] = set()
            consumed[person] = []
        spent = 0.0
        if data.positive[i] and row not in mine and (only is None or only(i)):
            exclude = np.fromiter(consumed[person], dtype=np.int64, count=len(consumed[person]))
            t0 = clock()
            recs = list(method.recommend(i, person, n_seen, exclude, k))[:k]
            spent = clock() - t0
            result.seconds_recommend += spent
            rank = recs.index(row) if row in recs else -1
            result.asked.append(i)
            result.ranks.append(rank)
            result.recommended.update(recs)
            if i >= cut:
                result.recommended_tail.update(recs)
        t0 = clock()
        method.learn(i, person)
        learn_s = clock() - t0
        result.seconds_learn += learn_s
        result.learned += 1
        if i >= cut:
            result.seconds_tail += spent + learn_s
            result.learned_tail += 1
        if row not in mine:
            mine.add(row)
            consumed[person].append(row)
        if row >= n_seen:
            n_seen = row + 1
        if progress is not None and i % 5000 == 0:
            progress(i)
    return result


def summarise(
    data: EvalData, result: Result, *, head: float = 0.8, bins: int = 10
) -> dict[str, Any]:
    """The figures of one method: overall, on the last ``1 - head`` of time, and over time."""
    cut = split_index(len(data), head)
    catalogue = len(data.items)
    overall, tail, first = Tally(), Tally(), Tally()
    per_bin = [Tally() for _ in range(bins)]
    for i, rank in zip(result.asked, result.ranks, strict=True):
        r = None if rank < 0 else rank
        overall.add(r)
        (tail if i >= cut else first).add(r)
        per_bin[min(bins - 1, i * bins // max(len(data), 1))].add(r)
    total_s = result.seconds_recommend + result.seconds_learn
    return {
        "method": result.name,
        **overall.report(),
        "coverage": round(len(result.recommended) / max(catalogue, 1), 5),
        "seconds": round(total_s, 3),
        "ms_per_event": round(1000 * total_s / max(result.learned, 1), 4),
        "ms_per_recommendation": round(
            1000 * result.seconds_recommend / max(len(result.asked), 1), 4
        ),
        "ms_per_learn": round(1000 * result.seconds_learn / max(result.learned, 1), 4),
        "first_80": first.report(),
        "last_20": {
            **tail.report(),
            "coverage": round(len(result.recommended_tail) / max(catalogue, 1), 5),
            "ms_per_event": round(1000 * result.seconds_tail / max(result.learned_tail, 1), 4),
        },
        "ndcg_over_time": [round(b.ndcg / max(b.events, 1), 5) for b in per_bin],
    }


__all__ = [
    "K",
    "Method",
    "Result",
    "Tally",
    "asked_events",
    "ndcg_at",
    "run_prequential",
    "split_index",
    "summarise",
]
