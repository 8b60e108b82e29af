"""What to do about a hole at the head of a partition's acknowledged offsets (pure logic).

Faust commits, per partition, the run of consecutive acknowledged offsets that starts at the
committed offset. Measured here (a worker leaving a two-worker group under load, 2 runs in 3): a
rebalance can make Faust drop fetched messages without acknowledging them and without reading
them again. Its streams skip a message fetched while flow control was suspended or under an
older generation, and its fetch loop drops a record that arrives below a read offset which a
batch fetched earlier had already moved past. The offsets after the hole are then acknowledged
as usual, and:

* a hole of two or more offsets stops the partition's commits for good (Faust returns "nothing
  to commit" while ``min(acked) - committed > 1``): lag grows forever, the stall alert fires;
* a hole of exactly one offset is committed *past* (Faust tolerates a difference of one): the
  event is lost without a trace.

:func:`decide` is the rule :class:`stream.faust_compat.TrueEndConsumer` applies before Faust
picks the offset to commit: never commit past a hole; once a hole has lasted ``heal_after_s``
with none of its offsets in flight, *refill* it: read exactly the hole's offsets again, out of
band, and hand them to the agents. A refill that finds an offset absent from the log (a
transaction marker, a compacted-away record) records it as a gap, on that evidence only; a hole
that is still there ``heal_after_s`` after a refill is refilled again, never committed past.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

Decision = Literal["commit", "wait", "refill"]

#: Default seconds a hole may last before it is read again (a few commit intervals: a message
#: being processed is in flight and never counts, so this only guards against a message still in
#: an agent's queue, not yet taken).
HEAL_AFTER_S: Final = 5.0


@dataclass
class Hole:
    """A hole first seen (or last refilled) at ``since`` (monotonic seconds)."""

    committed: int
    since: float
    refills: int = 0


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
    ``covered_by_gap``: the hole is a known gap (offsets the log does not hold).

    >>> decide(None, None, in_flight=False, covered_by_gap=False, now=0)
    ('commit', None)
    >>> decide((10, 12), None, in_flight=False, covered_by_gap=False, now=0)
    ('wait', Hole(committed=10, since=0, refills=0))
    >>> decide((10, 12), Hole(10, 0), in_flight=False, covered_by_gap=False, now=6)
    ('refill', Hole(committed=10, since=6, refills=1))
    >>> decide((10, 12), Hole(10, 6, 1), in_flight=False, covered_by_gap=False, now=12)
    ('refill', Hole(committed=10, since=12, refills=2))
    """
    if hole is None or covered_by_gap:
        return "commit", None
    committed, _low = hole
    if known is None or known.committed != committed:
        return "wait", Hole(committed, now)
    if in_flight or now - known.since < heal_after_s:
        return "wait", known
    return "refill", Hole(committed, now, known.refills + 1)


__all__ = ["HEAL_AFTER_S", "Decision", "Hole", "decide", "head_hole"]
