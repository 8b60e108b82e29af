"""How much of the time the worker's event loop is running callbacks rather than waiting.

Every agent, send, fetch and ranking of a worker runs on one asyncio event loop; when that loop
is busy nearly all the time it is the worker's bound, however idle the encoder or the machine.
Loop *lag* (:mod:`stream.metrics`) shows the symptom — a timer waking late — but not how close
to saturation a loop is before it lags. :class:`LoopBusy` measures the loop's utilisation
directly: it wraps the loop selector's ``select`` (where an idle loop waits for I/O or the next
timer) and counts the time between one ``select`` returning and the next being entered as busy.
This is the same quantity as Node.js' "event loop utilisation".

The worker exports it as the counter ``crossprofile_event_loop_busy_seconds_total`` (its rate is
the busy share, 0 to 1) and ``/stats.event_loop``; the pipeline benchmark reports the share per
phase. Busy time includes time the loop's thread waits for the GIL or a core while it has work.

>>> import asyncio, time
>>> loop = asyncio.new_event_loop()
>>> busy = LoopBusy()
>>> busy.install(loop)
True
>>> async def work() -> None:
...     time.sleep(0.02)  # a blocking step: busy
...     await asyncio.sleep(0.02)  # waiting: idle
>>> loop.run_until_complete(work())
>>> busy.busy_seconds >= 0.02 and busy.idle_seconds >= 0.015
True
>>> loop.close()
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

logger = logging.getLogger(__name__)


class LoopBusy:
    """Busy and idle seconds of one event loop since :meth:`install` (cumulative: a reader
    takes differences)."""

    def __init__(self) -> None:
        self.busy_seconds = 0.0
        self.idle_seconds = 0.0
        self.installed = False
        self._left: float | None = None  # when the last select returned

    def install(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Start timing ``loop`` (a selector event loop: the standard one on Linux); False, and a
        log line, for a loop without a Python selector (e.g. uvloop), which is left alone."""
        selector = getattr(loop, "_selector", None)
        select = getattr(selector, "select", None)
        if selector is None or select is None:
            logger.info("event-loop busy time not measured: %s has no selector", type(loop))
            return False
        if getattr(select, "_loop_busy", None) is self:
            return True  # already timing this loop
        clock = time.perf_counter

        def timed_select(timeout: float | None = None) -> Any:
            entered = clock()
            if self._left is not None:
                self.busy_seconds += entered - self._left
            try:
                return select(timeout)
            finally:
                self._left = clock()
                self.idle_seconds += self._left - entered

        timed_select._loop_busy = self  # type: ignore[attr-defined]
        selector.select = timed_select
        self.installed = True
        return True

    def summary(self) -> dict[str, Any]:
        """For ``/stats``: cumulative busy and idle seconds (None before :meth:`install`)."""
        if not self.installed:
            return {"busy_seconds": None, "idle_seconds": None}
        return {
            "busy_seconds": round(self.busy_seconds, 4),
            "idle_seconds": round(self.idle_seconds, 4),
        }


__all__ = ["LoopBusy"]
