"""How long CPython's cyclic garbage collector stops the worker, per generation.

A collection runs on whichever thread allocated last, holding the GIL: while it runs, the event
loop does nothing. A full (generation-2) collection walks every tracked object — in a worker
with a warm item index and thousands of profiles, 130,000-180,000 of them, 56-117 ms per
collection every few seconds at the max rate (session 15's probe). :class:`GcPauses` times each
collection through :data:`gc.callbacks`; the worker exports them as the histogram
``crossprofile_gc_pause_seconds{generation}`` and a summary in ``/stats``.

:func:`freeze_startup_objects` moves everything alive once the worker has started (modules, the
tokenizer, Faust's services) into the permanent generation, so full collections walk only what
the stream created since. Frozen objects are still freed by reference counting; only cycles
among them are never collected, and startup objects live as long as the process anyway.

>>> pauses = GcPauses()
>>> pauses.install()
>>> _ = gc.collect(2)
>>> pauses.summary()["collections"]["2"] >= 1
True
>>> pauses.uninstall()
"""

from __future__ import annotations

import gc
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

logger = logging.getLogger(__name__)

#: pauses kept for the ``/stats`` maximum (the histogram keeps them all)
RECENT: Final = 200
GENERATIONS: Final = ("0", "1", "2")


class GcPauses:
    """Counts and times every collection; ``observe(generation, seconds)`` (e.g. a Prometheus
    histogram's) is called for each one."""

    def __init__(self, observe: Callable[[str, float], None] | None = None) -> None:
        self._observe = observe
        self._started: float | None = None
        self.collections = dict.fromkeys(GENERATIONS, 0)
        self.seconds = dict.fromkeys(GENERATIONS, 0.0)
        self.recent: deque[tuple[str, float]] = deque(maxlen=RECENT)

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self._started is None:
            return  # installed during a collection
        seconds = time.perf_counter() - self._started
        self._started = None
        generation = str(info.get("generation", 2))
        self.collections[generation] = self.collections.get(generation, 0) + 1
        self.seconds[generation] = self.seconds.get(generation, 0.0) + seconds
        self.recent.append((generation, seconds))
        if self._observe is not None:
            self._observe(generation, seconds)

    def install(self) -> None:
        """Start timing collections: one instance per process (this replaces another)."""
        gc.callbacks[:] = [cb for cb in gc.callbacks if not isinstance(cb, GcPauses)]
        gc.callbacks.append(self)

    def uninstall(self) -> None:
        while self in gc.callbacks:
            gc.callbacks.remove(self)

    def summary(self) -> dict[str, Any]:
        """Collections and seconds per generation since start (cumulative: a reader takes
        differences), the longest of the recent ones, and the objects frozen at start.

        Copies first, each in one C call: a collection on another thread (the encoder's) may
        append to ``recent`` while this thread is between two steps of a Python loop over it
        ("deque mutated during iteration" answered a ``/stats`` with 500 once in CI)."""
        recent = list(self.recent)
        seconds = dict(self.seconds)
        return {
            "collections": dict(self.collections),
            "seconds": {g: round(s, 4) for g, s in seconds.items()},
            "recent_max_ms": {
                g: round(max((s for gg, s in recent if gg == g), default=0.0) * 1000.0, 2)
                for g in GENERATIONS
            },
            "frozen_objects": gc.get_freeze_count(),
        }


def freeze_startup_objects() -> int:
    """Collect once, then move every object alive into the permanent generation (see the module
    docstring); returns how many were frozen."""
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info(
        "garbage collector: %d startup objects frozen (%.0f ms); full collections walk only "
        "what the stream creates",
        frozen,
        (time.perf_counter() - t0) * 1000.0,
    )
    return frozen


__all__ = ["GENERATIONS", "RECENT", "GcPauses", "freeze_startup_objects"]
