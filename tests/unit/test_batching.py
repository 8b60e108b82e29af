"""stream.batching.take_when_idle: a batch is formed only once the encoder is free."""

from __future__ import annotations

import asyncio

import pytest

from stream.batching import take_when_idle


def test_waits_for_idle_and_takes_what_gathered_meanwhile() -> None:
    async def scenario() -> list[int]:
        inbox: asyncio.Queue[int] = asyncio.Queue()
        idle = asyncio.Event()  # a call is open
        batch = asyncio.ensure_future(take_when_idle(inbox, idle, 32))
        inbox.put_nowait(0)
        await asyncio.sleep(0.01)
        assert not batch.done()  # the first item waits for the encoder
        for n in range(1, 5):  # these arrive during the call ...
            inbox.put_nowait(n)
        idle.set()
        return await asyncio.wait_for(batch, 5)  # ... and join the first one's batch

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]


def test_an_idle_encoder_takes_the_first_item_alone_at_once() -> None:
    async def scenario() -> list[int]:
        inbox: asyncio.Queue[int] = asyncio.Queue()
        idle = asyncio.Event()
        idle.set()
        batch = asyncio.ensure_future(take_when_idle(inbox, idle, 32))
        await asyncio.sleep(0)
        inbox.put_nowait(7)
        got = await asyncio.wait_for(batch, 5)
        inbox.put_nowait(8)  # too late for that batch
        return got

    assert asyncio.run(scenario()) == [7]


def test_a_batch_stops_at_the_limit_and_the_rest_stays_in_order() -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        inbox: asyncio.Queue[int] = asyncio.Queue()
        for n in range(7):
            inbox.put_nowait(n)
        idle = asyncio.Event()
        idle.set()
        return await take_when_idle(inbox, idle, 4), await take_when_idle(inbox, idle, 4)

    assert asyncio.run(scenario()) == ([0, 1, 2, 3], [4, 5, 6])


def test_limit_must_be_positive() -> None:
    async def scenario() -> None:
        await take_when_idle(asyncio.Queue(), asyncio.Event(), 0)

    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(scenario())
