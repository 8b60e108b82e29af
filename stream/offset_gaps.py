"""What to do about a hole at the head of a partition's acknowledged offsets (pure logic).

Faust commits, per partition, the run of consecutive acknowledged offsets that starts at the
committed offset. Measured here (a worker leaving a two-worker group under load, 2 runs in 3): a
rebalance can make Faust drop fetched messages without acknowledging them and without reading
them again. Its streams skip a message fetched while flow control was suspended or under an
older generation, and the seek back to the committed offset had already happened. The offsets
after the hole are then acknowledged as usual, and:

* a hole of two or more offsets stops the partition's commits for good (Faust returns "nothing
  to commit" while ``min(acked) - committed > 1``): lag grows forever, the stall alert fires;
* a hole of exactly one offset is committed *past* (Faust tolerates a difference of one): the
  event is lost without a trace.

:func:`decide` is the rule :class:`stream.faust_compat.TrueEndConsumer` applies before Faust
picks the offset to commit: never commit past a hole; once a hole has lasted ``heal_after_s``
with none of its offsets in flight, seek the partition back to the committed offset, so the
hole is fetched again (the offsets after it are delivered twice, which the pipeline's dedup
absorbs). A hole that is still there after such a refetch is real — a transaction marker or a
compacted-away record — and is accepted as a gap, as Faust would.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

Decision = Literal["commit", "wait", "refetch", "accept"]

#: Default seconds a hole may last before it is fetched again (a few commit intervals: a message
#: being processed is in flight and never counts, so this only guards against a message still in
#: an agent's queue, not yet taken).
HEAL_AFTER_S: Final = 5.0


@dataclass
class Hole:
    """A hole first seen at ``since`` (monotonic seconds); ``refetched``: sought back once."""

    committed: int
    since: float
    refetched: bool = False


def head_hole(committed: int | None, acked: Iterable[int]) -> tuple[int, int] | None:
    """``(committed, first acked)`` when offsets between them are unacknowledged, else None.

    >>> head_hole(10, [12, 13]), head_hole(10, [10, 11]), head_hole(None, [5]), head_hole(3, [])
    ((10, 12), None, None, None)
    """
    low = min(acked, default=None)
    if committed is None or low is None or low <= committed:
        return None
    return committed, low


def decide(
    hole: tuple[int, int] | None,
    known: Hole | None,
    *,
    in_flight: bool,
    covered_by_gap: bool,
    now: float,
    heal_after_s: float = HEAL_AFTER_S,
) -> tuple[Decision, Hole | None]:
    """What to do now, and the hole to remember (None: forget it).

    ``hole``: :func:`head_hole`'s answer; ``known``: what was remembered for this partition;
    ``in_flight``: a message inside the hole is being processed (tracked, not acked);
    ``covered_by_gap``: Faust already knows the hole as a gap (it fills it when committing).

    >>> decide(None, None, in_flight=False, covered_by_gap=False, now=0)
    ('commit', None)
    >>> decide((10, 12), None, in_flight=False, covered_by_gap=False, now=0)
    ('wait', Hole(committed=10, since=0, refetched=False))
    >>> decide((10, 12), Hole(10, 0), in_flight=False, covered_by_gap=False, now=6)
    ('refetch', Hole(committed=10, since=6, refetched=True))
    >>> decide((10, 12), Hole(10, 6, True), in_flight=False, covered_by_gap=False, now=12)
    ('accept', None)
    """
    if hole is None or covered_by_gap:
        return "commit", None
    committed, _low = hole
    if known is None or known.committed != committed:
        return "wait", Hole(committed, now)
    if in_flight or now - known.since < heal_after_s:
        return "wait", known
    if not known.refetched:
        return "refetch", Hole(committed, now, refetched=True)
    return "accept", None


__all__ = ["HEAL_AFTER_S", "Decision", "Hole", "decide", "head_hole"]
