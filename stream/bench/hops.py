"""Where an event's latency goes, hop by hop, in ``crossprofile bench pipeline``'s latency phase.

An event crosses three agents, each reading one topic and writing the next::

    bench ──events──► ingest ──resolve──► identity ──persons──► profile ──recommendations──► bench

Every record carries the time its producer created it (Kafka's ``CreateTime``), and a
recommendation its ``generated_at``; the bench knows when it sent each event and when it read the
recommendation. After the phase the bench reads the phase's records of the two internal topics
back (group-less, from offsets taken before the phase) and splits each timed event's latency into:

* ``to_ingest_output`` — bench send → broker → ingest → its ``resolve`` record;
* ``ingest_to_identity_output`` — ``resolve`` record → identity → its ``persons`` record (an
  event whose person ingest resolved itself has no ``resolve`` record: its ingest and identity
  time is all in ``to_ingest_output``, and this hop is 0; ``identity_inline`` counts those);
* ``identity_to_recommendation`` — ``persons`` record → profile batch, encoder, learn, ranking
  (an event learned by the worker that resolved it has no ``persons`` record: the hops before
  this one end where identity ended, and ``profile_inline`` counts those);
* ``recommendation_to_reader`` — the recommendation built → sent → read by the bench.

All four are wall-clock differences on one machine, so they add up to the event's latency (to
within the clock's millisecond steps). :func:`split` is the pure part.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Final

from stream.bench.stats import percentiles

HOPS: Final = (
    "to_ingest_output",
    "ingest_to_identity_output",
    "identity_to_recommendation",
    "recommendation_to_reader",
)


def split(
    sent_ms: Mapping[str, float],
    resolved_ms: Mapping[str, float],
    routed_ms: Mapping[str, float],
    generated_ms: Mapping[str, float],
    read_ms: Mapping[str, float],
) -> dict[str, Any]:
    """Per-hop percentiles over the events found at every stage (wall-clock ms, one clock).

    >>> r = split({"e": 0}, {"e": 5}, {"e": 12}, {"e": 40}, {"e": 41})
    >>> r["events"], r["hops_ms"]["identity_to_recommendation"]["p50"]
    (1, 28.0)
    >>> r = split({"e": 0}, {}, {"e": 12}, {"e": 40}, {"e": 41})  # identity inside ingest
    >>> r["identity_inline"], r["hops_ms"]["to_ingest_output"]["p50"]
    (1, 12.0)
    >>> r = split({"e": 0}, {}, {}, {"e": 40}, {"e": 41})  # and the profile too
    >>> r["profile_inline"], r["hops_ms"]["identity_to_recommendation"]["p50"]
    (1, 40.0)
    """
    # no persons record: learned where it was resolved (its resolve record, else its send)
    profile_inline = {e: resolved_ms.get(e, t) for e, t in sent_ms.items() if e not in routed_ms}
    routed = {**profile_inline, **routed_ms}
    inline = {e: t for e, t in routed.items() if e not in resolved_ms}
    stages = (sent_ms, {**resolved_ms, **inline}, routed, generated_ms, read_ms)
    complete = [e for e in sent_ms if all(e in s for s in stages[1:])]
    hops: dict[str, Any] = {}
    for h, name in enumerate(HOPS):
        hops[name] = percentiles([stages[h + 1][e] - stages[h][e] for e in complete], (50, 90, 99))
    return {
        "events": len(complete),
        "events_missing_a_stage": len(sent_ms) - len(complete),
        "identity_inline": sum(1 for e in complete if e in inline),
        "profile_inline": sum(1 for e in complete if e in profile_inline),
        "hops_ms": hops,
    }


def end_offsets(bootstrap: str, topics: list[str]) -> dict[Any, int]:
    """The true end offset of every partition of ``topics`` now (:func:`stream.broker.
    log_end_offsets`: Tansu's ListOffsets-latest answers short of it)."""
    from kafka import TopicPartition

    from stream.broker import log_end_offsets

    return {
        TopicPartition(t, p): offset
        for t in topics
        for p, offset in log_end_offsets(bootstrap, t).items()
    }


def created_at(
    bootstrap: str, since: Mapping[Any, int], timeout_s: float = 30.0
) -> dict[str, float]:
    """``event id → CreateTime`` (ms) of the records written after ``since`` (offsets per
    partition) to those partitions, read up to their end offsets now. A value is either a clean
    event (``resolve``) or a profile command wrapping one (``persons``); other records are
    skipped."""
    from kafka import KafkaConsumer

    out: dict[str, float] = {}
    if not since:
        return out
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
    )  # fmt: skip
    try:
        tps = list(since)
        consumer.assign(tps)
        until = end_offsets(bootstrap, sorted({tp.topic for tp in tps}))
        for tp in tps:
            consumer.seek(tp, since[tp])
        left = {tp for tp in tps if until[tp] > since[tp]}
        deadline = time.monotonic() + timeout_s
        while left and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                for rec in records:
                    event_id = _event_id(rec.value)
                    if event_id is not None and event_id not in out:
                        out[event_id] = float(rec.timestamp)
                if consumer.position(tp) >= until[tp]:
                    left.discard(tp)
        return out
    finally:
        consumer.close()


def _event_id(value: bytes | None) -> str | None:
    if not value:
        return None
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    inner = doc.get("event") if doc.get("kind") == "event" else doc
    event_id = inner.get("event_id") if isinstance(inner, dict) else None
    return event_id if isinstance(event_id, str) else None


__all__ = ["HOPS", "created_at", "end_offsets", "split"]
