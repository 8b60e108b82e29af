"""The live parts of ``crossprofile bench pipeline``: a worker process, a topic watcher, the rig.

* :class:`WorkerProcess` — ``crossprofile worker`` as a child process, with its ``/stats``.
* :class:`Watcher` — a thread counting changelog records and timing recommendations.
* :class:`Rig` — broker, worker, producer and watcher together; :class:`Probe` and
  :func:`window_report` say where the time went between two instants.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.bench.stats import Sample
from stream.bench.streams import SyntheticEvent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int | Sequence[int] | None) -> float | None:
    """User + system CPU seconds of process ``pid``, or the sum over several (Linux ``/proc``;
    None elsewhere, or when one of them cannot be read)."""
    if pid is None:
        return None
    if not isinstance(pid, int):
        each = [cpu_seconds(p) for p in pid]
        return None if not each or None in each else sum(x for x in each if x is not None)
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where the platform has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


class WorkerProcess:
    """``crossprofile worker`` as a child process on its own topic prefix and group."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 300.0) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            ready = Path(tmp) / "ready"
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "wb") as logf:
                self.proc = subprocess.Popen(
                    [
                        *(sys.executable, "-m", "stream.cli", "worker"),
                        *("--web-port", str(self.port), "--ready-file", str(ready)),
                    ],
                    env=self.env,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + timeout_s
            while not ready.exists():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"worker exited {self.proc.returncode}; see {self.log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"worker not ready in {timeout_s:.0f} s; see {self.log_path}"
                    )
                time.sleep(0.2)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def stats(self) -> dict[str, Any]:
        """The worker's ``/stats`` (counters, encoder totals)."""
        url = f"http://127.0.0.1:{self.port}/stats"
        with urllib.request.urlopen(url, timeout=10) as resp:
            data: dict[str, Any] = json.loads(resp.read())
        return data

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


class WorkerGroup:
    """Worker processes (:class:`WorkerProcess`) in one consumer group, seen as one worker:
    started one after the other, ``/stats`` counters summed, CPU summed (:func:`cpu_seconds` of
    ``pids``)."""

    def __init__(self, workers: Sequence[WorkerProcess]) -> None:
        if not workers:
            raise ValueError("a worker group needs at least one worker")
        self.workers = list(workers)

    def start(self, timeout_s: float = 300.0) -> None:
        for worker in self.workers:
            worker.start(timeout_s)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.pid is not None]

    def dead(self) -> Path | None:
        """The log of a worker that has exited, if one has."""
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is not None:
                return w.log_path
        return None

    def stats(self) -> dict[str, Any]:
        """The workers' ``/stats``, numbers summed (see :func:`merge_stats`)."""
        return merge_stats([w.stats() for w in self.workers])

    def stop(self, timeout_s: float = 30.0) -> None:
        for worker in reversed(self.workers):
            worker.stop(timeout_s)


def merge_stats(stats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several workers' ``/stats`` as one: numbers summed key by key (nested too), anything else
    (names, lists) taken from the first; of the event-loop lag summaries and the longest recent
    GC pauses the worst.

    >>> merge_stats([{"n": 1, "e": {"s": 0.5, "p": "cpu"}}, {"n": 2, "e": {"s": 1.0, "p": "cpu"}}])
    {'n': 3, 'e': {'s': 1.5, 'p': 'cpu'}}
    >>> merge_stats([{"event_loop_lag": {"p99_ms": 3.0}}, {"event_loop_lag": {"p99_ms": 9.0}}])
    {'event_loop_lag': {'p99_ms': 9.0}}
    """
    out: dict[str, Any] = {}
    for key, first in stats[0].items():
        values = [s.get(key) for s in stats]
        if key in ("event_loop_lag", "recent_max_ms") and isinstance(first, Mapping):
            out[key] = _worst(values)
        elif isinstance(first, Mapping):
            out[key] = merge_stats([v if isinstance(v, Mapping) else {} for v in values])
        elif isinstance(first, int | float) and not isinstance(first, bool):
            out[key] = sum(v for v in values if isinstance(v, int | float))
        else:
            out[key] = first
    return out


def _worst(summaries: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in summaries:
        for k, v in (s or {}).items():
            if isinstance(v, int | float) and (out.get(k) is None or v > out[k]):
                out[k] = v
            else:
                out.setdefault(k, v)
    return out


class Watcher(threading.Thread):
    """Counts the profile changelog's records (events learned) and times recommendations.

    Both topics are read from the beginning, group-less, each by its own consumer; ``learned``
    and ``received`` grow as the worker writes. ``received[event_id]`` is when the first
    recommendation triggered by that event was read; ``deferred`` holds the ids whose
    recommendation waited for the refresh timer.

    Tansu spends ~0.7 ms of CPU per fetch request, and a caught-up reader of a busy topic makes
    about one fetch per record (reading a backlog costs ~0.002 ms a record), charged to the
    pipeline being measured. So the changelog is polled every ``COUNT_EVERY_S`` (counting needs
    no precision in time), and the recommendations every ``pace_s`` (0: as they arrive, for
    timing them; the max-rate phases, which time nothing, set it).
    """

    COUNT_EVERY_S = 0.25

    def __init__(self, bootstrap: str, changelog: str, recommendations: str) -> None:
        super().__init__(daemon=True, name="bench-watcher")
        self.counter = self._reader(bootstrap, changelog)
        self.recs = self._reader(bootstrap, recommendations)
        self.learned = 0
        self.recommendations = 0
        self.received: dict[str, float] = {}
        self.deferred: set[str] = set()
        #: per event id: the recommendation's ``generated_at`` and when it was read (wall ms)
        self.generated_ms: dict[str, float] = {}
        self.read_ms: dict[str, float] = {}
        self.pace_s = 0.0
        self._halt = threading.Event()

    @staticmethod
    def _reader(bootstrap: str, topic: str) -> Any:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=20, max_partition_fetch_bytes=4 << 20,
        )  # fmt: skip
        deadline = time.monotonic() + 60.0
        while not (parts := consumer.partitions_for_topic(topic)):
            if time.monotonic() > deadline:
                consumer.close()
                raise RuntimeError(f"topic {topic} not found")
            consumer.topics()
            time.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return consumer

    def run(self) -> None:
        next_count = 0.0
        while not self._halt.is_set():
            if time.monotonic() >= next_count:
                for records in self.counter.poll(timeout_ms=0).values():
                    self.learned += len(records)
                next_count = time.monotonic() + self.COUNT_EVERY_S
            wait_ms = 0 if self.pace_s > 0 else round(min(100.0, self.COUNT_EVERY_S * 1000))
            for records in self.recs.poll(timeout_ms=wait_ms).values():
                now = time.monotonic()
                for rec in records:
                    self._on_recommendation(rec.value, now)
            if self.pace_s > 0:
                self._halt.wait(min(self.pace_s, max(0.0, next_count - time.monotonic())))

    def _on_recommendation(self, value: bytes | None, now: float) -> None:
        if value is None:
            return
        self.recommendations += 1
        msg = json.loads(value)
        trigger = msg.get("trigger") or {}
        event_id = trigger.get("event_id")
        if isinstance(event_id, str) and event_id not in self.received:
            self.received[event_id] = now
            self.read_ms[event_id] = time.time() * 1000.0
            if isinstance(msg.get("generated_at"), int | float):
                self.generated_ms[event_id] = float(msg["generated_at"])
            if trigger.get("deferred"):
                self.deferred.add(event_id)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        self.counter.close()
        self.recs.close()


@dataclass
class Probe:
    """CPU and worker counters at one instant, to difference over a window."""

    t: float
    cpu: dict[str, float | None]
    stats: dict[str, Any]


@dataclass
class Rig:
    """Everything a phase needs: broker, worker, producer, watcher, and what was produced."""

    bootstrap: str
    worker: WorkerGroup
    producer: Any
    watcher: Watcher
    events_topic: str
    pids: dict[str, int | list[int] | None]
    progress: bool
    #: the worker's internal topics between the agents (``resolve``, ``persons``), read back
    #: after the latency phase to split each event's latency by hop (:mod:`stream.bench.hops`)
    hop_topics: tuple[str, ...] = ()
    produced: int = 0
    samples: list[Sample] = field(default_factory=list)

    def send(self, ev: SyntheticEvent) -> None:
        self.producer.send(self.events_topic, key=ev.key, value=ev.value)
        self.produced += 1

    def sample(self) -> Sample:
        s = (time.monotonic(), self.watcher.learned)
        self.samples.append(s)
        return s

    def probe(self) -> Probe:
        cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return Probe(time.monotonic(), cpu, self.worker.stats())


def window_report(a: Probe, b: Probe) -> dict[str, Any]:
    """Where the time went between two probes: CPU share per process and encoder counters."""
    dt = b.t - a.t
    cpu: dict[str, float | None] = {}
    for name, end in b.cpu.items():
        start = a.cpu.get(name)
        cpu[name] = round((end - start) / dt, 3) if end is not None and start is not None else None
    ea, eb = a.stats["encoder"], b.stats["encoder"]
    d = {k: eb[k] - ea[k] for k in ("batches", "texts", "seconds", "cache_hits", "cache_misses")}
    lookups = d["cache_hits"] + d["cache_misses"]
    return {
        "seconds": round(dt, 2),
        "cpu_cores_used": cpu,
        "encoder_batches": d["batches"],
        "encoder_texts": d["texts"],
        "encoder_mean_batch": round(d["texts"] / d["batches"], 2) if d["batches"] else None,
        "encoder_busy_share": round(d["seconds"] / dt, 3),
        # summed over a group's workers, like the encoder's (near 1 per worker: the loop bounds)
        "event_loop_busy_share": loop_busy_share(
            a.stats.get("event_loop"), b.stats.get("event_loop"), dt
        ),
        "encoder_texts_per_busy_s": round(d["cache_misses"] / d["seconds"], 1)
        if d["seconds"]
        else None,
        # lookups include the item-replication task's (one hit per item first seen in an event)
        "cache_hit_rate": round(d["cache_hits"] / lookups, 3) if lookups else None,
        "cache_misses": d["cache_misses"],
        "recommendations_out": b.stats["recommendations_out"] - a.stats["recommendations_out"],
        # the worker's event-loop lag over the last ~10 s before the window's end
        "event_loop_lag_ms": b.stats.get("event_loop_lag"),
        "gc_pauses": gc_window(a.stats.get("gc"), b.stats.get("gc"), dt),
    }


def loop_busy_share(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None, dt: float) -> Any:
    """The share of a window the worker's event loop was busy, from two ``/stats.event_loop``
    readings (None where the worker does not measure it).

    >>> loop_busy_share({"busy_seconds": 1.0}, {"busy_seconds": 8.5}, 10.0)
    0.75
    """
    start, end = (a or {}).get("busy_seconds"), (b or {}).get("busy_seconds")
    if start is None or end is None or dt <= 0:
        return None
    return round((end - start) / dt, 3)


def gc_window(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None, dt: float) -> Any:
    """The worker's garbage-collector pauses between two ``/stats`` readings: collections and
    seconds per generation, their share of the window, and the longest of the recent ones.

    >>> a = {"collections": {"0": 10, "2": 1}, "seconds": {"0": 0.01, "2": 0.05}}
    >>> b = {"collections": {"0": 30, "2": 3}, "seconds": {"0": 0.03, "2": 0.25},
    ...      "recent_max_ms": {"0": 2.0, "2": 110.0}, "frozen_objects": 90000}
    >>> w = gc_window(a, b, 10.0)
    >>> w["collections"], w["seconds"], w["share_of_window"]
    ({'0': 20, '2': 2}, {'0': 0.02, '2': 0.2}, 0.022)
    """
    if not a or not b:
        return None
    ca, sa = a.get("collections", {}), a.get("seconds", {})
    collections = {g: n - ca.get(g, 0) for g, n in b.get("collections", {}).items()}
    seconds = {g: round(s - sa.get(g, 0.0), 4) for g, s in b.get("seconds", {}).items()}
    return {
        "collections": collections,
        "seconds": seconds,
        "share_of_window": round(sum(seconds.values()) / dt, 4) if dt > 0 else None,
        "recent_max_ms": b.get("recent_max_ms"),
        "frozen_objects": b.get("frozen_objects"),
    }


# --- phases --------------------------------------------------------------------------------------


__all__ = [
    "Probe",
    "Rig",
    "Watcher",
    "WorkerGroup",
    "WorkerProcess",
    "cpu_seconds",
    "gc_window",
    "load_average",
    "loop_busy_share",
    "merge_stats",
    "window_report",
]
