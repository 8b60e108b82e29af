"""What ``crossprofile bench pipeline`` measures in its own process, with no broker or worker.

* :func:`encoder_throughput` — the raw encoder, in the worker's batch size and in one call.
* :func:`state_sizes` — bytes of one person's profile as the profile table stores it.
* :func:`pure_costs` — milliseconds per event of the worker's pure steps.
"""

from __future__ import annotations

import json
import pickle
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from stream.bench.streams import CATEGORIES, EVENT_TYPES, PLATFORMS, TS_BASE_MS

if TYPE_CHECKING:
    from stream.encoder import Encoder
    from stream.models import Event
    from stream.settings import Settings

FloatArray = npt.NDArray[np.float32]

STATE_CHECKPOINTS: Final = (10, 100, 1000)


def encoder_throughput(
    encoder: Encoder, texts: Sequence[str], batch_size: int, repeats: int
) -> tuple[dict[str, Any], FloatArray]:
    """Sentences/s of ``encoder.encode`` in calls of ``batch_size`` texts (stream order), median
    of ``repeats``; plus one length-sorted call over all texts. Returns the embeddings too."""
    encoder.encode(list(texts[: min(len(texts), batch_size)]))  # warm-up
    rates: list[float] = []
    emb: FloatArray = np.empty((0, encoder.dim), np.float32)
    for _ in range(repeats):
        t0 = time.perf_counter()
        parts = [
            encoder.encode(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)
        ]
        rates.append(len(texts) / (time.perf_counter() - t0))
        emb = np.concatenate(parts)
    t0 = time.perf_counter()
    encoder.encode(texts)
    whole = len(texts) / (time.perf_counter() - t0)
    return {
        "texts": len(texts),
        "batch_size": batch_size,
        "sentences_per_s": round(statistics.median(rates), 1),
        "sentences_per_s_runs": [round(r, 1) for r in rates],
        "sentences_per_s_one_sorted_call": round(whole, 1),
        "provider": encoder.provider,
        "variant": encoder.variant,
    }, emb


def state_sizes(
    embeddings: FloatArray, settings: Settings, checkpoints: Sequence[int] = STATE_CHECKPOINTS
) -> dict[str, dict[str, int]]:
    """Bytes of one person's profile after each checkpoint's number of events.

    Events cycle through ``embeddings`` (rows), platforms, types and categories; each has its own
    id and item. ``codec_bytes`` is the profile table's codec (what it writes to its changelog),
    ``pickle_bytes`` plain ``pickle.dumps``.
    """
    from faust.serializers import codecs

    from stream.faust_compat import PROFILE_CODEC
    from stream.pipeline import new_profile, observation

    if len(embeddings) == 0:
        raise ValueError("embeddings must not be empty.")
    prof = new_profile(settings)
    out: dict[str, dict[str, int]] = {}
    for n in range(1, max(checkpoints) + 1):
        i = n - 1
        ev = _synthetic_event(i, "one-person")
        prof.learn(observation(ev, embeddings[i % len(embeddings)], settings))
        if n in checkpoints:
            out[str(n)] = {
                "codec_bytes": len(codecs.dumps(PROFILE_CODEC, prof)),
                "pickle_bytes": len(pickle.dumps(prof)),
            }
    return out


def _synthetic_event(i: int, user: str) -> Event:
    from stream.models import Event, Item

    item = Item(id=f"state-{i}", title=f"item {i}", category=CATEGORIES[i % len(CATEGORIES)])
    return Event(
        event_id=f"state-ev-{i}",
        platform=PLATFORMS[i % len(PLATFORMS)],
        user_id=user,
        type=EVENT_TYPES[i % len(EVENT_TYPES)],
        ts=TS_BASE_MS + i * 60_000,
        item=item,
    )


def pure_costs(
    embeddings: FloatArray, settings: Settings, *, events: int = 400, persons: int = 100
) -> dict[str, Any]:
    """Milliseconds per event of the worker's pure steps, in this process, no Faust or Kafka.

    An item index holds one item per embedding row; ``events`` events spread over ``persons``
    persons are learned (``observation`` + ``learn``), recommended for
    (``recommendation_message``), and serialised as the worker does (the profile with the
    profile table's codec for the changelog, the recommendation and the profile snapshot as
    JSON). ``ceiling_events_per_s`` is what one core could do if these were all the work. The
    ranking is the worker's: interests blended with co-visits and popularity (``Signals`` from
    the settings, fed every event); the matmuls use numpy's BLAS with this process's thread
    settings.
    """
    from faust.serializers import codecs

    from stream.faust_compat import PROFILE_CODEC
    from stream.pipeline import new_profile, observation, recommendation_message
    from stream.recommend import ItemIndex, Signals

    index = ItemIndex(
        embeddings.shape[1], ann_min_items=settings.index_ann_min_items, background_build=False
    )
    for i, vec in enumerate(embeddings):
        ev = _synthetic_event(i, "x")
        assert ev.item is not None
        index.upsert(ev.item, vec)
    profiles = {f"p{k}": new_profile(settings) for k in range(persons)}
    signals = Signals(**settings.signals_config())
    spent = dict.fromkeys(("learn", "recommend", "serialise"), 0.0)
    for i in range(events):
        pid = f"p{i % persons}"
        ev, prof = _synthetic_event(i % len(embeddings), pid), profiles[pid]
        ev = replace(ev, event_id=f"state-ev-{i}")
        assert ev.item is not None
        t0 = time.perf_counter()
        signals.learn(prof, index, ev.item.id, ev.ts)
        prof.learn(observation(ev, embeddings[i % len(embeddings)], settings))
        t1 = time.perf_counter()
        msg = recommendation_message(pid, ev, prof, index, settings, [], 0, signals=signals)
        t2 = time.perf_counter()
        codecs.dumps(PROFILE_CODEC, prof)
        json.dumps(msg)
        json.dumps(prof.to_json(pid, []))
        t3 = time.perf_counter()
        for key, dt in (("learn", t1 - t0), ("recommend", t2 - t1), ("serialise", t3 - t2)):
            spent[key] += dt
    ms = {k: round(v * 1000 / events, 3) for k, v in spent.items()}
    total = sum(spent.values()) * 1000 / events
    return {
        "index_items": len(embeddings),
        "events": events,
        "persons": persons,
        "ms_per_event": {**ms, "total": round(total, 3)},
        "ceiling_events_per_s": round(1000 / total, 1) if total else None,
    }


__all__ = [
    "STATE_CHECKPOINTS",
    "FloatArray",
    "encoder_throughput",
    "pure_costs",
    "state_sizes",
]
