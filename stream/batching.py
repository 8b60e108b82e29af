"""Batches formed when the encoder is free (late binding), for the commands a worker routes itself.

A profile batch opens one encoder call. If a batch were formed as soon as its first command
arrived, commands arriving during a running call would each queue behind it in a batch of their
own — small batches are the encoder's slowest (on 2 cores ~65 texts per busy second in batches
of 1-3 against ~120 in batches of 32), and a command behind two queued calls waits for both.
So a batch takes its first command, waits until the encoder has no call open, and only then
takes whatever else has gathered, up to the batch size.

Pure asyncio, no Faust: :mod:`stream.app` feeds the inbox with the commands a worker routes to
itself (:mod:`stream.inline`), which arrive one by one. Commands read from the persons topic
come in clumps (one fetch's worth); forming their batches this way too made them 2-3 times
bigger and the paced p99 4-5 times worse on 2 cores (docs/performance-history.md, session 14),
so that path keeps ``take_events``' batches.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

T = TypeVar("T")


async def take_when_idle(inbox: asyncio.Queue[T], idle: asyncio.Event, limit: int) -> list[T]:
    """The next batch from ``inbox``: its first item, then — once ``idle`` is set — every item
    already waiting, ``limit`` in all at most. Items keep their order.

    >>> async def demo() -> list[int]:
    ...     inbox: asyncio.Queue[int] = asyncio.Queue()
    ...     for n in range(5):
    ...         inbox.put_nowait(n)
    ...     idle = asyncio.Event()
    ...     idle.set()
    ...     return await take_when_idle(inbox, idle, 3)
    >>> asyncio.run(demo())
    [0, 1, 2]
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    items = [await inbox.get()]
    await idle.wait()
    while len(items) < limit and not inbox.empty():
        items.append(inbox.get_nowait())
    return items


__all__ = ["take_when_idle"]
