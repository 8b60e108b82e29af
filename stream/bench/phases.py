"""The measuring phases of ``crossprofile bench pipeline``, each driving a :class:`Rig`.

* :func:`idle_phase` — the worker's CPU with nothing to do.
* :func:`max_rate_phase` — max sustained events/s with a bounded backlog, then :func:`drain`.
* :func:`latency_phase` — event → recommendation latency at a paced rate.
* :func:`run_phases` — starts the worker, watcher and producer and runs them all in order.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Final

from stream.bench import hops
from stream.bench.rig import Probe, Rig, Watcher, WorkerGroup, merge_stats, window_report
from stream.bench.stats import (
    backlog_target,
    interval_rates,
    percentiles,
    percentiles_by_slice,
    quantile_interval,
    sustained_rate,
)
from stream.bench.streams import EventStream

if TYPE_CHECKING:
    from stream.bench.pipeline_bench import Options
    from stream.settings import Settings

SAMPLE_EVERY_S: Final = 0.25
#: the watcher's pause between polls while a max-rate phase only counts learned events
WATCHER_PACE_S: Final = 0.25


def say(progress: bool, line: str) -> None:
    """``line`` on stderr when ``progress`` is on."""
    if progress:
        print(line, file=sys.stderr, flush=True)


def _bar(total: float, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=round(total), desc=desc, unit="s", disable=None if enabled else True, leave=False,
        file=sys.stderr, mininterval=0.5,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s {postfix}",
    )  # fmt: skip


def idle_phase(rig: Rig, seconds: float) -> dict[str, Any]:
    """CPU the worker (and broker) use with nothing to do: timers, polling, lag refresh."""
    first = rig.probe()
    time.sleep(seconds)
    w = window_report(first, rig.probe())
    return {"seconds": w["seconds"], "cpu_cores_used": w["cpu_cores_used"]}


def _raise_if_dead(rig: Rig) -> None:
    dead = rig.worker.dead()
    if dead is not None:
        raise RuntimeError(f"a worker died; see {dead}")


def drain(rig: Rig, timeout_s: float) -> tuple[bool, float]:
    """Wait until every event produced so far is learned; returns (drained, seconds waited)."""
    rig.producer.flush()
    t0 = time.monotonic()
    while rig.watcher.learned < rig.produced:
        if time.monotonic() - t0 > timeout_s:
            return False, time.monotonic() - t0
        _raise_if_dead(rig)
        time.sleep(0.1)
    return True, time.monotonic() - t0


def max_rate_phase(rig: Rig, stream: EventStream, opts: Options) -> dict[str, Any]:
    """Keep a bounded backlog ahead of the worker; the learned rate over the window is the max."""
    produced0, learned0 = rig.produced, rig.watcher.learned
    rig.watcher.pace_s = WATCHER_PACE_S  # counting only: no recommendation is timed here
    t0 = time.monotonic()
    start, end = t0 + opts.warmup_s, t0 + opts.warmup_s + opts.window_s
    rate: float | None = None
    probes: dict[str, Probe] = {}
    next_sample = t0
    bar = _bar(opts.warmup_s + opts.window_s, f"{stream.name}: max rate", rig.progress)
    while (now := time.monotonic()) < end:
        if now >= next_sample:
            rig.sample()
            next_sample = now + SAMPLE_EVERY_S
            rate = sustained_rate(rig.samples, now - 3.0, now) or rate
            bar.n = round(now - t0)
            bar.set_postfix_str(f"{rate or 0:.0f} events/s")
            if now >= start and "start" not in probes:
                probes["start"] = rig.probe()
        backlog = rig.produced - rig.watcher.learned
        room = backlog_target(rate, opts.backlog_s, opts.backlog_min) - backlog
        if room > 0:
            for _ in range(min(room, 200)):
                rig.send(next(stream))
        else:
            time.sleep(0.02)
    rig.sample()
    probes["end"] = rig.probe()
    bar.close()
    ws, we = probes["start"].t, probes["end"].t
    measured = sustained_rate(rig.samples, ws, we)
    produced_phase = rig.produced - produced0
    drained, drain_s = drain(rig, opts.drain_timeout_s)
    rig.watcher.pace_s = 0.0
    return {
        "events_per_s": round(measured, 1) if measured is not None else None,
        "window_s": round(we - ws, 2),
        "warmup_s": opts.warmup_s,
        "rates_per_5s": [round(r, 1) for r in interval_rates(rig.samples, ws, we, 5.0)],
        "events_produced": produced_phase,
        "events_learned": rig.watcher.learned - learned0,
        "drained": drained,
        "drain_s": round(drain_s, 1),
        "where_time_goes": window_report(probes["start"], probes["end"]),
    }


def prewarm_phase(rig: Rig, stream: EventStream, n: int, opts: Options) -> dict[str, Any]:
    """Send ``n`` events of ``stream`` with a bounded backlog and wait until they are learned:
    unmeasured, so that the next phase on the same stream starts where a longer-running worker
    would be (its cache holds the items drawn so far)."""
    produced0 = rig.produced
    rig.watcher.pace_s = WATCHER_PACE_S
    t0 = time.monotonic()
    bar = _bar(n, f"{stream.name}: prewarm", rig.progress)
    bar.unit = "events"
    bar.bar_format = None
    sent = 0
    while sent < n:
        backlog = rig.produced - rig.watcher.learned
        room = min(n - sent, 200, max(opts.backlog_min, 400) - backlog)
        if room > 0:
            for _ in range(room):
                rig.send(next(stream))
            sent += room
            bar.n = sent
            bar.refresh()
        else:
            _raise_if_dead(rig)
            time.sleep(0.02)
    bar.close()
    drained, _ = drain(rig, opts.drain_timeout_s)
    rig.watcher.pace_s = 0.0
    seconds = time.monotonic() - t0
    return {
        "events_produced": rig.produced - produced0,
        "seconds": round(seconds, 1),
        "events_per_s": round((rig.produced - produced0) / seconds, 1) if seconds > 0 else None,
        "drained": drained,
    }


#: the paced phase's latencies are also summarised per slice of this many seconds
LATENCY_SLICE_S: Final = 10.0


def latency_phase(rig: Rig, stream: EventStream, rate: float, opts: Options) -> dict[str, Any]:
    """Produce ``rate`` events/s for ``latency_s``; time each event to its recommendation."""
    produced0, learned0 = rig.produced, rig.watcher.learned
    sent_at: dict[str, float] = {}
    sent_ms: dict[str, float] = {}  # wall clock, for the hop split
    offsets = hops.end_offsets(rig.bootstrap, list(rig.hop_topics)) if rig.hop_topics else {}
    interval = 1.0 / rate
    n = max(1, round(rate * opts.latency_s))
    bar = _bar(opts.latency_s, f"latency at {rate:.0f} events/s", rig.progress)
    t0 = time.monotonic()
    first = rig.probe()
    for i in range(n):
        delay = t0 + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ev = next(stream)
        now = time.monotonic()
        rig.send(ev)
        if now - t0 >= opts.latency_warmup_s:
            sent_at[ev.event_id] = now
            sent_ms[ev.event_id] = time.time() * 1000.0
        if i % max(1, round(rate / 2)) == 0:
            bar.n = round(now - t0)
            bar.refresh()
    t_last = time.monotonic()
    behind = t_last - (t0 + (n - 1) * interval)
    last = rig.probe()
    bar.close()
    drained, _ = drain(rig, opts.drain_timeout_s)
    time.sleep(0.5)  # the last recommendations trail the changelog write by a send
    # one snapshot: the watcher's thread goes on reading, and the hop split below must cover
    # exactly the events the latencies do
    received, deferred = dict(rig.watcher.received), set(rig.watcher.deferred)
    direct_ids = [e for e in sent_at if e in received and e not in deferred]
    direct = [(received[e] - sent_at[e]) * 1000 for e in direct_ids]
    late = [(received[e] - t) * 1000 for e, t in sent_at.items() if e in deferred and e in received]
    by_hop = _hop_split(rig, offsets, {e: sent_ms[e] for e in direct_ids})
    return {
        "stream": stream.name,
        "rate_target": round(rate, 1),
        "rate_achieved": round((n - 1) / (t_last - t0), 1) if n > 1 else None,
        "producer_behind_s": round(max(0.0, behind), 3),
        "events_produced": rig.produced - produced0,
        "events_learned": rig.watcher.learned - learned0,
        "events_timed": len(sent_at),
        "latency_ms": percentiles(direct),
        # how far this run's p99 can sit from the rate's true p99 (order statistics, 95 %)
        "latency_p99_ci95_ms": _rounded(quantile_interval(direct, 0.99)),
        "latency_deferred_ms": percentiles(late),
        # saturation (every slice's tail high) or a hiccup (one slice's)
        "latency_by_slice_ms": percentiles_by_slice(
            [sent_at[e] - t0 for e in direct_ids], direct, LATENCY_SLICE_S
        ),
        "without_recommendation": sum(1 for e in sent_at if e not in received),
        "drained": drained,
        "where_time_goes": window_report(first, last),
        "by_hop": by_hop,
    }


def _rounded(interval: tuple[float | None, float | None]) -> list[float | None]:
    return [None if v is None else round(v, 1) for v in interval]


def _hop_split(rig: Rig, offsets: dict[Any, int], sent_ms: dict[str, float]) -> dict[str, Any]:
    """Each timed event's latency split by hop (:mod:`stream.bench.hops`); a failure to read the
    topics back is reported, not raised: the phase's figures stand without it."""
    if not offsets:
        return {}
    try:
        resolve, persons = (
            hops.created_at(rig.bootstrap, {tp: o for tp, o in offsets.items() if tp.topic == t})
            for t in rig.hop_topics
        )
    except Exception as exc:  # a diagnostic: the phase's figures stand without it
        return {"error": repr(exc)}
    w = rig.watcher
    return hops.split(sent_ms, resolve, persons, w.generated_ms, w.read_ms)


# --- encoder -------------------------------------------------------------------------------------


def run_phases(
    opts: Options,
    settings: Settings,
    bootstrap: str,
    prefix: str,
    worker: WorkerGroup,
    pids: dict[str, int | list[int] | None],
    streams: tuple[EventStream, EventStream],
    progress: bool,
) -> dict[str, Any]:
    """Start the worker(s), then: idle CPU, max rate per stream, latency at half the unique
    max."""
    from kafka import KafkaProducer

    n = len(worker.workers)
    say(progress, f"starting {n} worker{'s' if n > 1 else ''} on {bootstrap} (topics {prefix}.*) …")
    worker.start()
    wsettings = settings.model_copy(update={"topic_prefix": prefix})
    watcher = Watcher(bootstrap, f"{prefix}-profiles-changelog", wsettings.recommendations_topic)
    watcher.start()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    pids = {**pids, "worker": worker.pids, "bench": os.getpid()}
    if n > 1:  # each worker's share too (the group's is "worker")
        pids.update({f"worker{i}": pid for i, pid in enumerate(worker.pids)})
    rig = Rig(
        bootstrap, worker, producer, watcher, wsettings.events_topic, pids, progress,
        hop_topics=(f"{prefix}.resolve", f"{prefix}.persons"),
    )  # fmt: skip
    try:
        idle = idle_phase(rig, 3.0 if opts.quick else 5.0)
        phases: dict[str, dict[str, Any]] = {}
        prewarm: dict[str, Any] | None = None
        for stream in streams:
            if stream.name == "zipf" and opts.zipf_prewarm > 0:
                prewarm = prewarm_phase(rig, stream, opts.zipf_prewarm, opts)
                say(progress, f"zipf prewarm: {prewarm}")
            phases[stream.name] = max_rate_phase(rig, stream, opts)
            say(progress, f"{stream.name}: {phases[stream.name]['events_per_s']} events/s")
        rate = opts.latency_rate or max(1.0, (phases["unique"]["events_per_s"] or 1.0) / 2)
        latency = latency_phase(rig, streams[0], rate, opts)
        say(progress, f"latency at {rate:.1f} events/s: {latency['latency_ms']}")
        each = [w.stats() for w in worker.workers]
        final = merge_stats(each)
    finally:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)  # closing clients log noise
        watcher.stop()
        producer.close()
    return {
        "worker_idle": idle,
        "pipeline": phases,
        "zipf_prewarm": prewarm,
        "latency": latency,
        "totals": {
            "events_produced": rig.produced,
            "events_learned": watcher.learned,
            "recommendations_read": watcher.recommendations,
            "worker_events_in": final["events_in"],
            "worker_rejected": sum(final["events_rejected"].values()),
            "worker_duplicates": final["duplicates"],
            "worker_recommendations_out": final["recommendations_out"],
            "profiles": final["profiles"],
            "items_indexed": final["items"],
        },
        "worker_stats_final": final,
        "worker_stats_per_process": each if len(each) > 1 else [],
    }


# --- output --------------------------------------------------------------------------------------


__all__ = [
    "SAMPLE_EVERY_S",
    "drain",
    "idle_phase",
    "latency_phase",
    "max_rate_phase",
    "prewarm_phase",
    "run_phases",
    "say",
]
