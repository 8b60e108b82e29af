"""The inline router's ordering rules (stream.inline), without Faust or a broker."""

from __future__ import annotations

import asyncio

import pytest

from stream.inline import InlineRouter, Step


def test_a_partition_is_held_until_its_barrier_then_dispatched_in_order() -> None:
    r: InlineRouter[str] = InlineRouter()
    r.begin(4)
    assert r.admit(1, 4, "a") is Step.HOLD_AND_SEND_BARRIER
    assert r.admit(2, 4, "x") is Step.HOLD_AND_SEND_BARRIER  # each partition its own barrier
    assert r.admit(1, 4, "b") is Step.HOLD
    assert r.barrier_applied(2, 4) == ["x"]
    assert r.admit(1, 4, "c") is Step.HOLD  # partition 1's barrier is not applied yet
    assert r.barrier_applied(1, 4) == ["a", "b", "c"]
    assert r.admit(1, 4, "d") is Step.DISPATCH
    assert r.barrier_applied(1, 4) == []  # a second barrier of the same partition: nothing
    assert r.inflight == 5


def test_a_barrier_of_another_generation_releases_nothing() -> None:
    r: InlineRouter[str] = InlineRouter()
    r.begin(2)
    r.admit(0, 2, "a")
    assert r.barrier_applied(0, 1) == []
    assert r.admit(0, 2, "b") is Step.HOLD


def test_a_new_generation_starts_only_when_the_last_one_is_done() -> None:
    r: InlineRouter[str] = InlineRouter()
    r.begin(0)
    r.admit(0, 0, "held")
    r.admit(1, 0, "x")
    r.barrier_applied(1, 0)
    r.admit(1, 0, "dispatched")
    assert r.retire() == ["held"]  # to the topic, by the caller
    with pytest.raises(RuntimeError):
        r.admit(1, 1, "too early")
    with pytest.raises(RuntimeError):
        r.begin(1)  # three admitted, none done
    r.done(3)
    r.begin(1)
    # barriers are forgotten: partition 1 needs a new one in the new generation
    assert r.admit(1, 1, "y") is Step.HOLD_AND_SEND_BARRIER


def test_wait_idle_returns_once_every_admitted_item_is_done() -> None:
    async def scenario() -> list[str]:
        r: InlineRouter[str] = InlineRouter()
        r.begin(0)
        r.admit(0, 0, "a")
        r.admit(0, 0, "b")
        seen: list[str] = []

        async def waiter() -> None:
            await r.wait_idle()
            seen.append("idle")

        task = asyncio.ensure_future(waiter())
        await asyncio.sleep(0)
        r.done()
        await asyncio.sleep(0)
        seen.append("one done")
        r.done()
        await task
        return seen

    assert asyncio.run(scenario()) == ["one done", "idle"]
