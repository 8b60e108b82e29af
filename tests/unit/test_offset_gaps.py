"""Never commit past a hole in the acknowledged offsets: the rule, and the consumer applying it.

The integration test ``test_a_worker_leaving_under_load_loses_nothing`` shows the holes are real
(a worker leaving a group under load); here each step of the rule, and that the Faust consumer
of ``stream.faust_compat`` follows it when it picks the offset to commit.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from intervaltree import IntervalTree

from stream.faust_compat import TrueEndConsumer
from stream.offset_gaps import Hole, decide, head_hole


def test_head_hole_only_between_the_commit_and_the_first_ack() -> None:
    assert head_hole(100, [100, 101, 105]) is None  # a later hole: Faust commits up to it
    assert head_hole(100, [101, 102]) == (100, 101)  # one offset: Faust would commit past it
    assert head_hole(100, [103]) == (100, 103)  # several: Faust would stall for good
    assert head_hole(0, [1]) == (0, 1)  # offset 0 is a committed offset like any other
    assert head_hole(None, [7]) is None  # no commit yet: nothing to compare with


def test_a_hole_is_waited_on_then_refilled_until_it_closes() -> None:
    hole = (10, 12)
    kw: dict[str, Any] = {"in_flight": False, "covered_by_gap": False, "heal_after_s": 5.0}
    action, known = decide(hole, None, now=100.0, **kw)
    assert action == "wait" and known == Hole(10, 100.0)
    assert decide(hole, known, now=104.9, **kw)[0] == "wait"
    action, known = decide(hole, known, now=105.0, **kw)
    assert action == "refill" and known == Hole(10, 105.0, 1)
    assert decide(hole, known, now=109.0, **kw)[0] == "wait"  # the refill gets its time
    # still open: read again, never committed past (a gap needs the log's evidence)
    assert decide(hole, known, now=110.0, **kw) == ("refill", Hole(10, 110.0, 2))


def test_in_flight_and_known_gaps_and_a_moved_commit() -> None:
    old = Hole(10, 0.0)
    assert decide((10, 12), old, in_flight=True, covered_by_gap=False, now=60.0) == ("wait", old)
    assert decide((10, 12), old, in_flight=False, covered_by_gap=True, now=60.0) == (
        "commit",
        None,
    )
    # the commit moved on (the hole closed and another opened): the clock starts again
    action, known = decide((20, 22), old, in_flight=False, covered_by_gap=False, now=60.0)
    assert action == "wait" and known == Hole(20, 60.0)
    assert decide(None, old, in_flight=False, covered_by_gap=False, now=60.0) == ("commit", None)


class _Message:
    def __init__(self, tp: TP, offset: int) -> None:
        self.tp, self.offset, self.acked = tp, offset, False


def _consumer() -> tuple[Any, list[tuple[TP, int, int]]]:
    """A TrueEndConsumer without a broker: only the offset bookkeeping ``_new_offset`` reads
    (Faust's own), and ``_refill`` captured."""
    consumer: Any = TrueEndConsumer.__new__(TrueEndConsumer)
    consumer._holes, consumer._refills, consumer.holes_refetched = {}, {}, 0
    consumer._log_start, consumer._log_start_asked = {}, {}
    consumer._committed_offset, consumer._acked, consumer._acked_index = {}, {}, {}
    consumer._gap, consumer._unacked_messages = {}, set()
    refilled: list[tuple[TP, int, int]] = []

    async def refill(tp: TP, start: int, end: int) -> None:
        refilled.append((tp, start, end))

    consumer._refill = refill
    consumer.heal_after_s = 5.0
    return consumer, refilled


def test_the_consumer_holds_the_commit_and_refills(monkeypatch: pytest.MonkeyPatch) -> None:
    tp = TP("t.events", 0)
    clock = [1000.0]
    monkeypatch.setattr("stream.faust_compat.time.monotonic", lambda: clock[0])
    consumer, refilled = _consumer()
    consumer._committed_offset[tp] = 214
    consumer._acked[tp] = [216, 217, 218]  # 214 and 215 dropped by a rebalance
    consumer._acked_index[tp] = {216, 217, 218}
    consumer._gap[tp] = IntervalTree()

    async def run() -> None:
        assert consumer._new_offset(tp) is None  # Faust would stall here; we wait
        clock[0] += 2.0
        inflight = _Message(tp, 214)
        consumer._unacked_messages.add(inflight)  # being processed: not a hole to heal
        clock[0] += 10.0
        assert consumer._new_offset(tp) is None and not refilled
        consumer._unacked_messages.clear()
        assert consumer._new_offset(tp) is None
        await asyncio.sleep(0)
        assert refilled == [(tp, 214, 216)] and consumer.holes_refetched == 1
        # the refill delivers them: the commit goes on over the whole run
        consumer._acked[tp] = [214, 215, 216, 217, 218]
        consumer._acked_index[tp] = {214, 215, 216, 217, 218}
        assert consumer._new_offset(tp) == 219
        assert tp not in consumer._holes

    asyncio.run(run())


def test_a_single_dropped_offset_is_not_committed_past() -> None:
    """Faust's own rule commits 51 here (it tolerates a difference of one): event 50 lost."""
    tp = TP("t.events", 1)
    consumer, _refilled = _consumer()
    consumer._committed_offset[tp] = 50
    consumer._acked[tp] = [51]
    consumer._acked_index[tp] = {51}
    consumer._gap[tp] = IntervalTree()
    assert consumer._new_offset(tp) is None
    consumer._gap[tp].addi(50, 51)  # a gap the log shows (e.g. a transaction marker): commit
    assert consumer._new_offset(tp) == 52


def test_before_the_first_commit_a_hole_counts_from_the_log_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust says None for "no commit yet" and then commits 3 here: offset 0 never processed."""
    tp = TP("t.events", 2)
    clock = [50.0]
    monkeypatch.setattr("stream.faust_compat.time.monotonic", lambda: clock[0])
    consumer, refilled = _consumer()
    consumer._committed_offset[tp] = None
    consumer._acked[tp] = [1, 2]
    consumer._acked_index[tp] = {1, 2}
    consumer._gap[tp] = IntervalTree()
    asked: list[TP] = []
    consumer._ask_log_start = asked.append

    async def run() -> None:
        assert consumer._new_offset(tp) is None and asked == [tp]  # held until it is known
        consumer._log_start[tp] = 0
        assert consumer._new_offset(tp) is None
        clock[0] += 6.0
        assert consumer._new_offset(tp) is None
        await asyncio.sleep(0)
        assert refilled == [(tp, 0, 1)]
        consumer._acked[tp] = [0, 1, 2]
        assert consumer._new_offset(tp) == 3

    asyncio.run(run())
    consumer._acked[tp] = [5, 6]  # a log that starts at 5 (retention): no hole
    consumer._log_start[tp] = 5
    assert consumer._new_offset(tp) == 7


def test_a_jump_of_the_read_offset_is_not_taken_for_a_gap() -> None:
    """Faust marks offsets it never delivered as a gap when its read offset jumps."""
    tp = TP("t.events", 0)
    consumer, _refilled = _consumer()
    consumer._committed_offset[tp] = 208
    consumer._gap[tp] = IntervalTree()
    asyncio.run(consumer._add_gap(tp, 209, 215))
    assert not consumer._gap[tp]


def _app(generation: int, *, flow_active: bool = True) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(
        consumer_generation_id=generation,
        flow_control=SimpleNamespace(is_active=lambda: flow_active),
    )


def test_an_ack_from_before_a_rebalance_is_not_recorded() -> None:
    """Faust's streams ack messages they skip after a rebalance; such an ack leaves a hole."""
    consumer, _refilled = _consumer()
    consumer.app = _app(7)
    consumer.stale_acks_ignored = 0
    tp = TP("t.events", 0)
    stale: Any = _Message(tp, 214)
    stale.generation_id = 6
    consumer._unacked_messages.add(stale)
    assert consumer.ack(stale) is False
    assert stale.acked and stale not in consumer._unacked_messages
    assert consumer.stale_acks_ignored == 1 and not consumer._acked.get(tp)


def test_an_ack_while_flow_control_is_suspended_is_not_recorded() -> None:
    """A stream skips, and acks, any message it takes while a rebalance is under way."""
    consumer, _refilled = _consumer()
    consumer.app = _app(7, flow_active=False)
    consumer.stale_acks_ignored = 0
    tp = TP("t.events", 0)
    skipped: Any = _Message(tp, 300)
    skipped.generation_id = 7
    assert consumer.ack(skipped) is False
    assert consumer.stale_acks_ignored == 1 and not consumer._acked.get(tp)


class _Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


def _refill_consumer(
    monkeypatch: pytest.MonkeyPatch, offsets: list[int], complete: bool
) -> tuple[Any, list[int]]:
    """A TrueEndConsumer whose ``_refill`` reads ``offsets`` (the broker's answer) and whose
    Faust callback records what the agents would get."""
    consumer: Any = TrueEndConsumer.__new__(TrueEndConsumer)
    consumer.app = _app(3)
    consumer.records_refilled = 0
    consumer.refill_timeout_s = 1.0
    consumer._gap, consumer._acked_index = {}, {}
    consumer.refill_max_offsets = 5000
    consumer.transport = None
    monkeypatch.setattr("stream.faust_compat._servers", lambda transport: ["localhost:1"])
    monkeypatch.setattr("stream.faust_compat._client_kwargs", lambda app, purpose: {})
    consumer.assignment = lambda: {TP("t.events", 0)}
    consumer._to_message = lambda tp, record: record.offset
    delivered: list[int] = []

    async def callback(message: int) -> None:
        delivered.append(message)

    async def fetch_range(*_a: Any, **_kw: Any) -> tuple[list[_Record], bool]:
        return [_Record(o) for o in offsets], complete

    consumer.callback = callback
    monkeypatch.setattr("stream.faust_compat.fetch_range", fetch_range)
    return consumer, delivered


def test_a_refill_delivers_the_unacked_records_and_gaps_only_what_the_log_lacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tp = TP("t.events", 0)
    consumer, delivered = _refill_consumer(monkeypatch, [10, 11, 13], complete=True)
    consumer._gap[tp] = IntervalTree()
    consumer._acked_index[tp] = {11}  # delivered and acked meanwhile
    asyncio.run(consumer._refill(tp, 10, 14))
    assert delivered == [10, 13] and consumer.records_refilled == 2
    assert sorted((i.begin, i.end) for i in consumer._gap[tp]) == [(12, 13)]


def test_a_short_refill_gaps_nothing_and_a_moved_partition_gets_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tp = TP("t.events", 0)
    consumer, delivered = _refill_consumer(monkeypatch, [10], complete=False)
    consumer._gap[tp] = IntervalTree()
    asyncio.run(consumer._refill(tp, 10, 14))
    assert delivered == [10] and not consumer._gap[tp]  # no evidence that 11..13 are absent
    other = TP("t.events", 1)  # no longer assigned to this worker
    consumer._gap[other] = IntervalTree()
    asyncio.run(consumer._refill(other, 10, 14))
    assert delivered == [10] and not consumer._gap[other]


def test_a_refill_that_cannot_deliver_stops_and_leaves_the_hole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tp = TP("t.events", 0)
    consumer, _delivered = _refill_consumer(monkeypatch, [10, 11], complete=True)
    consumer._gap[tp] = IntervalTree()

    async def closed(message: int) -> None:
        raise RuntimeError("channel closed")  # the worker is stopping

    consumer.callback = closed
    asyncio.run(consumer._refill(tp, 10, 12))  # no exception escapes the task
    assert consumer.records_refilled == 0 and not consumer._gap[tp]


def _stop_commits(final: Any) -> list[str]:
    """What ``final`` (a consumer's commit at stop) commits while Faust's periodic commit, taken
    before the last acks, is still in flight."""

    async def scenario() -> list[str]:
        consumer, _refilled = _consumer()
        consumer.app = SimpleNamespace(client_only=False)
        consumer.loop = asyncio.get_running_loop()
        calls: list[str] = []

        async def force_commit(topics: Any = None, start_new_transaction: bool = True) -> bool:
            calls.append("a commit of every offset acked by now")
            return True

        consumer.force_commit = force_commit
        in_flight: asyncio.Future[None] = consumer.loop.create_future()
        consumer._commit_fut = in_flight

        async def periodic_commit_ends() -> None:
            await asyncio.sleep(0.01)
            calls.append("the periodic commit ends")
            consumer._commit_fut = None  # as Faust's commit() does when it ends
            in_flight.set_result(None)

        ending = asyncio.ensure_future(periodic_commit_ends())
        await final(consumer)
        await ending
        return calls

    return asyncio.run(scenario())


def test_the_commit_at_stop_follows_a_commit_in_flight() -> None:
    """Faust's own last commit only waits for the one in flight (whose offsets may predate the
    last acks: a restarted worker would process those events again); ours commits after it."""
    from faust.transport.consumer import Consumer as FaustConsumer

    assert _stop_commits(FaustConsumer.commit_and_end_transactions) == ["the periodic commit ends"]
    assert _stop_commits(TrueEndConsumer.commit_and_end_transactions) == [
        "the periodic commit ends",
        "a commit of every offset acked by now",
    ]
