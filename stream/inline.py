"""Which profile commands a worker may apply itself instead of sending them round the broker.

The worker that resolves an event's person (the holder of the identity partition) usually also
holds that person's ``persons`` partition: on a group of one worker, always. Sending the
command to the persons topic only to read it back costs a produce, a fetch and a Faust stream
event per event on worker and broker alike. :class:`InlineRouter` decides when the command may
skip that hop and go straight to the worker's own profile batches — without ever letting a
command overtake an earlier one for the same partition, which the topic's order guaranteed:

* **A barrier first.** The first command for a partition in a rebalance generation sends a
  ``barrier`` record to that partition and is *held*, as is every later one, until the profile
  agent has applied the barrier: by then every command queued on the topic before it has been
  applied, and the held commands go to the profile batches in their order. Nothing for that
  partition goes onto the topic afterwards in this generation (merge-ins, which commute, aside).
* **A new generation drains the old one.** After a rebalance has begun, no command is routed
  until every command admitted in the old generation is done: applied, or — for held ones and
  those of batches the rebalance overtook — sent to the topic, ahead of anything routed later.

Pure: no Faust, no broker; :mod:`stream.app` wires it. The items are opaque to it.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Generic, TypeVar

T = TypeVar("T")


class Step(enum.Enum):
    """What to do with an admitted command."""

    DISPATCH = "dispatch"  # to the profile batches now
    HOLD = "hold"  # wait for the partition's barrier (already sent)
    HOLD_AND_SEND_BARRIER = "hold_and_send_barrier"  # send the barrier, then wait for it


class InlineRouter(Generic[T]):
    """Barrier and hold bookkeeping per partition and generation (see the module's doc).

    >>> r: InlineRouter[str] = InlineRouter()
    >>> r.begin(0)
    >>> r.admit(3, 0, "a"), r.admit(3, 0, "b")  # first for partition 3: send its barrier
    (<Step.HOLD_AND_SEND_BARRIER: 'hold_and_send_barrier'>, <Step.HOLD: 'hold'>)
    >>> r.barrier_applied(3, 0)  # the profile agent reached it: the held ones, in order
    ['a', 'b']
    >>> r.admit(3, 0, "c")
    <Step.DISPATCH: 'dispatch'>
    >>> r.inflight, r.done(3), r.inflight
    (3, None, 0)
    >>> r.admit(5, 0, "d"); r.retire()  # a rebalance: the held ones go the topic way
    <Step.HOLD_AND_SEND_BARRIER: 'hold_and_send_barrier'>
    ['d']
    """

    def __init__(self) -> None:
        self.generation = -1
        #: partitions whose barrier was applied in this generation
        self._passed: set[int] = set()
        #: partition -> commands waiting for its barrier (the barrier has been sent)
        self._held: dict[int, list[T]] = {}
        #: commands admitted and not yet done (held, dispatched, in a batch)
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def admit(self, partition: int, generation: int, item: T) -> Step:
        """Take ``item`` for ``partition`` in ``generation`` (the caller has called
        :meth:`retire` and waited for :meth:`wait_idle` on a generation change)."""
        if generation != self.generation:
            raise RuntimeError("admit() in a new generation before retire()")
        self.inflight += 1
        self._idle.clear()
        if partition in self._passed:
            return Step.DISPATCH
        held = self._held.get(partition)
        if held is not None:
            held.append(item)
            return Step.HOLD
        self._held[partition] = [item]
        return Step.HOLD_AND_SEND_BARRIER

    def barrier_applied(self, partition: int, generation: int) -> list[T]:
        """The profile agent applied ``partition``'s barrier of ``generation``: the held items,
        in admission order, to dispatch now (none if the barrier is from another generation)."""
        if generation != self.generation or partition not in self._held:
            return []
        self._passed.add(partition)
        return self._held.pop(partition)

    def done(self, n: int = 1) -> None:
        """``n`` admitted items are finished (applied, sent to the topic, or left)."""
        self.inflight = max(0, self.inflight - n)
        if self.inflight == 0:
            self._idle.set()

    def retire(self) -> list[T]:
        """End the generation: forget every barrier and return the items still held (the
        caller sends them to the topic and marks them :meth:`done`)."""
        held = [item for items in self._held.values() for item in items]
        self._held.clear()
        self._passed.clear()
        self.generation = -1
        return held

    async def wait_idle(self) -> None:
        """Until every admitted item is done."""
        await self._idle.wait()

    def begin(self, generation: int) -> None:
        """Start admitting in ``generation`` (after :meth:`retire` and :meth:`wait_idle`)."""
        if self.inflight:
            raise RuntimeError("begin() with items of the last generation still in flight")
        self.generation = generation


__all__ = ["InlineRouter", "Step"]
