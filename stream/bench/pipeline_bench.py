"""``crossprofile bench pipeline``: the whole stream, end to end, through the broker.

One run starts (or reuses, with ``CROSSPROFILE_BROKER``) a broker, one real ``crossprofile
worker`` process on a fresh topic prefix and consumer group, and measures:

* **raw encoder** — :class:`stream.encoder.Encoder` (the worker's class and settings, cache off)
  on the texts the unique stream will send, in calls of ``encoder_batch_size`` texts in stream
  order (what one worker batch can do at best), median of repeats; and, for reference, one
  length-sorted call over all of them. Measured before the worker starts, so nothing competes.
* **max sustained events/s** for two streams — *unique* (every event a new item with a new
  text: every event needs the encoder) and *zipf* (items drawn by Zipf(s) popularity from a
  fixed catalogue with stable ids: the worker's item-embedding cache hits). The producer keeps a
  bounded backlog ahead of the worker (a few seconds of work, never empty), so the worker is
  always busy but its first stages cannot run far ahead of the last one. Progress is the count
  of records on the profile table's changelog: the worker writes one per event it learned, after
  ingest, identity, embedding and the profile update. After a warm-up, the rate over a fixed
  window is the figure; then production stops and the backlog drains, so each phase ends with
  ``learned == produced``.
* **event → recommendation latency** — unique events produced at a paced rate (half the unique
  max rate), from just before ``send`` to the moment a recommendation naming the event as its
  trigger is read back from the recommendations topic (deferred ones — held back by the
  person's refresh interval — are counted apart).
* **profile state size** — bytes of one person's :class:`stream.profile.InterestProfile` after
  10, 100 and 1,000 events, encoded with Faust's ``pickle`` codec exactly as the worker's
  profile table stores it (and as raw ``pickle.dumps``), computed in this process.

Where the time goes: per window, the worker's, broker's and this process's CPU use
(``/proc``), and the deltas of the worker's ``/stats`` encoder counters (batches, texts, seconds
spent in the encoder, cache hits). Benchmarks print figures; tests only check their consistency.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import pickle
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from stream.bench.texts import DEFAULT_SEED, generate

if TYPE_CHECKING:
    from stream.encoder import Encoder
    from stream.models import Event
    from stream.settings import Settings

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

#: Targets of issue 3 (ratios within one run; latency on CPU; bytes per person).
TARGET_UNIQUE_VS_ENCODER: Final = 0.8
TARGET_ZIPF_VS_ENCODER: Final = 5.0
TARGET_P99_MS: Final = 250.0
TARGET_STATE_BYTES: Final = 4096
STATE_CHECKPOINTS: Final = (10, 100, 1000)
PLATFORMS: Final = ("shop", "news", "video", "social")
CATEGORIES: Final = (
    "running", "electronics", "kitchen", "books", "fashion", "music", "outdoor", "home",
    "toys", "beauty", "garden", "travel",
)  # fmt: skip
EVENT_TYPES: Final = ("view", "click", "like", "cart", "purchase", "share")
TYPE_WEIGHTS: Final = (0.5, 0.2, 0.12, 0.08, 0.05, 0.05)
SAMPLE_EVERY_S: Final = 0.25
TS_BASE_MS: Final = 1_763_600_000_000


@dataclass(frozen=True)
class Options:
    """What one run does (see ``--help``)."""

    warmup_s: float = 10.0
    window_s: float = 30.0
    latency_s: float = 20.0
    latency_rate: float | None = None  # None: half the unique max rate
    latency_warmup_s: float = 3.0
    backlog_s: float = 4.0
    backlog_min: int = 100
    zipf_items: int = 10_000
    zipf_s: float = 1.1
    users: int = 5_000
    encoder_texts: int = 1_000
    encoder_repeats: int = 3
    drain_timeout_s: float = 180.0
    seed: int = 7
    quick: bool = False


QUICK: Final = Options(
    warmup_s=2.0,
    window_s=4.0,
    latency_s=4.0,
    latency_warmup_s=1.0,
    backlog_min=40,
    zipf_items=300,
    users=100,
    encoder_texts=64,
    encoder_repeats=1,
    drain_timeout_s=120.0,
    quick=True,
)


# --- streams (pure) ------------------------------------------------------------------------------


class ZipfSampler:
    """Ranks ``0..n-1`` drawn with probability ∝ ``(rank + 1) ** -s``; deterministic per seed.

    >>> a = ZipfSampler(1000, 1.1, seed=3).sample(5)
    >>> b = ZipfSampler(1000, 1.1, seed=3).sample(5)
    >>> bool((a == b).all()), int(a.min()) >= 0, int(a.max()) < 1000
    (True, True, True)
    """

    def __init__(self, n: int, s: float, *, seed: int) -> None:
        if n < 1:
            raise ValueError("n must be at least 1.")
        if s <= 0:
            raise ValueError("s must be greater than 0.")
        self.n = n
        self.s = s
        weights = np.arange(1, n + 1, dtype=np.float64) ** -s
        self.probabilities: npt.NDArray[np.float64] = weights / weights.sum()
        self._cdf = np.cumsum(self.probabilities)
        self._cdf[-1] = 1.0
        self._rng = np.random.default_rng(seed)

    def sample(self, size: int) -> npt.NDArray[np.int64]:
        """``size`` ranks (0 is the most popular)."""
        u = self._rng.random(size)
        return np.searchsorted(self._cdf, u, side="right").astype(np.int64)

    def expected_distinct(self, draws: int) -> float:
        """Expected number of distinct ranks among ``draws`` draws."""
        return float(np.sum(1.0 - (1.0 - self.probabilities) ** draws))


def distinct_texts(n: int, *, seed: int = DEFAULT_SEED) -> list[str]:
    """``n`` distinct corpus texts (:mod:`stream.bench.texts`), chaining seeds beyond one's supply.

    >>> t = distinct_texts(50)
    >>> len(set(t)), t == distinct_texts(50)
    (50, True)
    """
    out: list[str] = []
    seen: set[str] = set()
    for k in itertools.count():
        if len(out) >= n:
            break
        for _kind, text in generate(min(30_000, n - len(out)), seed=seed + k):
            if text not in seen:
                seen.add(text)
                out.append(text)
    return out[:n]


@dataclass(frozen=True)
class SyntheticEvent:
    """One event to produce: its Kafka key, JSON bytes and id."""

    key: bytes
    value: bytes
    event_id: str
    embed_text: str


def make_event(
    event_id: str, n: int, platform_: str, user: str, etype: str, item: Mapping[str, Any]
) -> SyntheticEvent:
    """A canonical event keyed by account, as platform producers send them."""
    body = {
        "event_id": event_id,
        "platform": platform_,
        "user_id": user,
        "type": etype,
        "ts": TS_BASE_MS + n * 10,
        "item": dict(item),
    }
    embed = ". ".join(p for p in (str(item["title"]), str(item.get("category", ""))) if p)
    return SyntheticEvent(
        f"{platform_}:{user}".encode(), json.dumps(body).encode(), event_id, embed
    )


class EventStream:
    """An endless stream of item events over ``users`` accounts: accounts, types and items are
    deterministic per seed; event ids carry a per-run tag, so a rerun on a shared broker never
    looks like a replay.

    ``items(i)`` gives the item of event ``i`` (a new one per event for the unique stream, a
    Zipf-drawn catalogue entry for the zipf stream).
    """

    def __init__(
        self, name: str, items: Callable[[int], Mapping[str, Any]], *, users: int, seed: int
    ) -> None:
        self.name = name
        self._items = items
        self._users = users
        self._rng = np.random.default_rng(seed)
        self._n = 0
        self._tag = uuid.uuid4().hex[:8]

    def __iter__(self) -> Iterator[SyntheticEvent]:
        return self

    def __next__(self) -> SyntheticEvent:
        i = self._n
        self._n += 1
        u = int(self._rng.integers(self._users))
        platform_ = PLATFORMS[u % len(PLATFORMS)]
        etype = EVENT_TYPES[int(self._rng.choice(len(EVENT_TYPES), p=TYPE_WEIGHTS))]
        return make_event(
            f"{self.name}-{self._tag}-{i}", i, platform_, f"u{u}", etype, self._items(i)
        )


def unique_items(texts: Sequence[str], prefix: str = "new") -> Callable[[int], dict[str, Any]]:
    """Event ``i`` gets a never-seen item: id ``{prefix}-{i}``, title ``texts[i]`` (past the
    end of ``texts``, the text again with a ``(#round)`` suffix, still distinct).

    >>> f = unique_items(["a", "b"])
    >>> f(0)["title"], f(3)["title"], f(3)["id"]
    ('a', 'b (#1)', 'new-3')
    """

    def item(i: int) -> dict[str, Any]:
        rounds, j = divmod(i, len(texts))
        return {
            "id": f"{prefix}-{i}",
            "title": texts[j] + (f" (#{rounds})" if rounds else ""),
            "category": CATEGORIES[i % len(CATEGORIES)],
        }

    return item


def zipf_items(
    titles: Sequence[str], sampler: ZipfSampler, chunk: int = 4096
) -> Callable[[int], dict[str, Any]]:
    """Event ``i`` gets catalogue item ``z-{rank}`` (stable id, title, category) by Zipf rank."""
    ranks: list[int] = []

    def item(i: int) -> dict[str, Any]:
        while i >= len(ranks):
            ranks.extend(int(r) for r in sampler.sample(chunk))
        r = ranks[i]
        return {"id": f"z-{r}", "title": titles[r], "category": CATEGORIES[r % len(CATEGORIES)]}

    return item


# --- maths (pure) --------------------------------------------------------------------------------

Sample = tuple[float, int]  # (monotonic seconds, cumulative count)


def sustained_rate(samples: Sequence[Sample], start: float, end: float) -> float | None:
    """Count per second between the first sample at/after ``start`` and the last at/before ``end``.

    >>> sustained_rate([(0.0, 0), (1.0, 50), (2.0, 150), (3.0, 250), (4.0, 300)], 1.0, 3.0)
    100.0
    >>> sustained_rate([(0.0, 0)], 0.0, 1.0) is None
    True
    """
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    return (c1 - c0) / (t1 - t0)


def interval_rates(samples: Sequence[Sample], start: float, end: float, step: float) -> list[float]:
    """Rates over consecutive ``step``-second slices of ``[start, end]`` (steadiness check).

    >>> interval_rates([(float(t), 10 * t) for t in range(11)], 0.0, 10.0, 5.0)
    [10.0, 10.0]
    """
    out: list[float] = []
    t = start
    while t + step <= end + 1e-9:
        r = sustained_rate(samples, t, t + step)
        if r is not None:
            out.append(r)
        t += step
    return out


def percentiles(values_ms: Sequence[float], qs: Sequence[float] = (50, 99)) -> dict[str, Any]:
    """``{"p50": …, "p99": …, "n": …}`` rounded to 0.1 ms (``None`` when there is no value).

    >>> percentiles([float(x) for x in range(1, 101)])
    {'p50': 50.5, 'p99': 99.0, 'n': 100}
    >>> percentiles([])
    {'p50': None, 'p99': None, 'n': 0}
    """
    out: dict[str, Any] = {}
    arr = np.asarray(values_ms, dtype=np.float64)
    for q in qs:
        out[f"p{q:g}"] = round(float(np.percentile(arr, q)), 1) if arr.size else None
    out["n"] = int(arr.size)
    return out


def backlog_target(rate: float | None, seconds: float, floor: int) -> int:
    """Events to keep queued ahead of the worker: ``seconds`` of work at ``rate``, ≥ ``floor``.

    >>> [backlog_target(r, 4.0, 100) for r in (None, 10.0, 80.0)]
    [100, 100, 320]
    """
    return max(floor, int(seconds * rate)) if rate else floor


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` rounded to 3 places, or None when either is missing or ``b`` is 0."""
    return round(a / b, 3) if a is not None and b else None


# --- profile state size (pure) -------------------------------------------------------------------


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

    index = ItemIndex(embeddings.shape[1])
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


# --- processes and clients -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``; None elsewhere)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _loadavg() -> list[float] | None:
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


class Watcher(threading.Thread):
    """Counts the profile changelog's records (events learned) and times recommendations.

    Both topics are read from the beginning, group-less; ``learned`` and ``received`` grow as the
    worker writes. ``received[event_id]`` is when the first recommendation triggered by that
    event was read; ``deferred`` holds the ids whose recommendation waited for the refresh timer.
    """

    def __init__(self, bootstrap: str, changelog: str, recommendations: str) -> None:
        super().__init__(daemon=True, name="bench-watcher")
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=20, max_partition_fetch_bytes=4 << 20,
        )  # fmt: skip
        tps = [
            TopicPartition(topic, p)
            for topic in (changelog, recommendations)
            for p in sorted(self._partitions(topic))
        ]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.changelog = changelog
        self.learned = 0
        self.recommendations = 0
        self.received: dict[str, float] = {}
        self.deferred: set[str] = set()
        self._halt = threading.Event()

    def _partitions(self, topic: str, timeout_s: float = 60.0) -> set[int]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            parts = self.consumer.partitions_for_topic(topic)
            if parts:
                return set(parts)
            self.consumer.topics()
            time.sleep(0.2)
        raise RuntimeError(f"topic {topic} not found")

    def run(self) -> None:
        while not self._halt.is_set():
            for tp, records in self.consumer.poll(timeout_ms=100).items():
                now = time.monotonic()
                if tp.topic == self.changelog:
                    self.learned += len(records)
                    continue
                for rec in records:
                    self._on_recommendation(rec.value, now)

    def _on_recommendation(self, value: bytes | None, now: float) -> None:
        if value is None:
            return
        self.recommendations += 1
        trigger = json.loads(value).get("trigger") or {}
        event_id = trigger.get("event_id")
        if isinstance(event_id, str) and event_id not in self.received:
            self.received[event_id] = now
            if trigger.get("deferred"):
                self.deferred.add(event_id)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        self.consumer.close()


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
    worker: WorkerProcess
    producer: Any
    watcher: Watcher
    events_topic: str
    pids: dict[str, int | None]
    progress: bool
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
        "encoder_texts_per_busy_s": round(d["cache_misses"] / d["seconds"], 1)
        if d["seconds"]
        else None,
        # lookups include the item-replication task's (one hit per item first seen in an event)
        "cache_hit_rate": round(d["cache_hits"] / lookups, 3) if lookups else None,
        "cache_misses": d["cache_misses"],
        "recommendations_out": b.stats["recommendations_out"] - a.stats["recommendations_out"],
    }


# --- phases --------------------------------------------------------------------------------------


def _say(progress: bool, line: str) -> None:
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


def drain(rig: Rig, timeout_s: float) -> tuple[bool, float]:
    """Wait until every event produced so far is learned; returns (drained, seconds waited)."""
    rig.producer.flush()
    t0 = time.monotonic()
    while rig.watcher.learned < rig.produced:
        if time.monotonic() - t0 > timeout_s:
            return False, time.monotonic() - t0
        if rig.worker.proc is not None and rig.worker.proc.poll() is not None:
            raise RuntimeError(f"the worker died; see {rig.worker.log_path}")
        time.sleep(0.1)
    return True, time.monotonic() - t0


def max_rate_phase(rig: Rig, stream: EventStream, opts: Options) -> dict[str, Any]:
    """Keep a bounded backlog ahead of the worker; the learned rate over the window is the max."""
    produced0, learned0 = rig.produced, rig.watcher.learned
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


def latency_phase(rig: Rig, stream: EventStream, rate: float, opts: Options) -> dict[str, Any]:
    """Produce ``rate`` events/s for ``latency_s``; time each event to its recommendation."""
    produced0, learned0 = rig.produced, rig.watcher.learned
    sent_at: dict[str, float] = {}
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
        if i % max(1, round(rate / 2)) == 0:
            bar.n = round(now - t0)
            bar.refresh()
    t_last = time.monotonic()
    behind = t_last - (t0 + (n - 1) * interval)
    last = rig.probe()
    bar.close()
    drained, _ = drain(rig, opts.drain_timeout_s)
    time.sleep(0.5)  # the last recommendations trail the changelog write by a send
    received, deferred = rig.watcher.received, rig.watcher.deferred
    direct = [
        (received[e] - t) * 1000 for e, t in sent_at.items() if e in received and e not in deferred
    ]
    late = [(received[e] - t) * 1000 for e, t in sent_at.items() if e in deferred]
    return {
        "stream": stream.name,
        "rate_target": round(rate, 1),
        "rate_achieved": round((n - 1) / (t_last - t0), 1) if n > 1 else None,
        "producer_behind_s": round(max(0.0, behind), 3),
        "events_produced": rig.produced - produced0,
        "events_learned": rig.watcher.learned - learned0,
        "events_timed": len(sent_at),
        "latency_ms": percentiles(direct),
        "latency_deferred_ms": percentiles(late),
        "without_recommendation": sum(1 for e in sent_at if e not in received),
        "drained": drained,
        "where_time_goes": window_report(first, last),
    }


# --- encoder -------------------------------------------------------------------------------------


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


# --- run -----------------------------------------------------------------------------------------


def _settings_used(settings: Settings) -> dict[str, Any]:
    keys = (
        "encoder_batch_size", "encoder_max_wait_ms", "encoder_threads", "encoder_variant",
        "encoder_provider", "encoder_max_tokens", "encoder_cache_size", "partitions",
        "refresh_interval_s", "fetch_max_wait_ms", "max_interests", "top_k", "log_level",
    )  # fmt: skip
    dumped = settings.model_dump()
    return {k: dumped[k] for k in keys}


def _worker_env(settings: Settings, bootstrap: str, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "CROSSPROFILE_BROKER": bootstrap,
        "CROSSPROFILE_TOPIC_PREFIX": prefix,
        "CROSSPROFILE_APP_ID": prefix,
        "CROSSPROFILE_DATA_DIR": str(settings.data_dir),
    }


def targets(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's pipeline targets, each with its value and ``met``."""
    ratios, lat = report["ratios"], report["latency"]["latency_ms"]["p99"]
    state = max(v["codec_bytes"] for v in report["state_bytes_per_person"].values())

    def entry(value: float | None, target: float, higher: bool) -> dict[str, Any]:
        met = value is not None and (value >= target if higher else value < target)
        return {"value": value, "target": target, "met": met}

    return {
        "pipeline_unique_vs_encoder_ge": entry(
            ratios["pipeline_unique_vs_encoder"], TARGET_UNIQUE_VS_ENCODER, True
        ),
        "pipeline_zipf_vs_encoder_ge": entry(
            ratios["pipeline_zipf_vs_encoder"], TARGET_ZIPF_VS_ENCODER, True
        ),
        "p99_latency_ms_lt": entry(lat, TARGET_P99_MS, False),
        "state_bytes_per_person_le": {
            "value": state,
            "target": TARGET_STATE_BYTES,
            "met": state <= TARGET_STATE_BYTES,
        },
    }


def _streams(opts: Options, pool_size: int) -> tuple[list[str], EventStream, EventStream, Any]:
    texts = distinct_texts(opts.zipf_items + pool_size, seed=DEFAULT_SEED + opts.seed)
    catalogue, fresh = texts[: opts.zipf_items], texts[opts.zipf_items :]
    sampler = ZipfSampler(opts.zipf_items, opts.zipf_s, seed=opts.seed)
    unique = EventStream("unique", unique_items(fresh), users=opts.users, seed=opts.seed)
    zipf = EventStream("zipf", zipf_items(catalogue, sampler), users=opts.users, seed=opts.seed + 1)
    return fresh, unique, zipf, sampler


def measure_in_process(
    opts: Options, settings: Settings, fresh: Sequence[str], progress: bool
) -> dict[str, Any]:
    """Raw encoder on the unique stream's first texts, state size and pure per-event costs."""
    from stream.encoder import Encoder

    first = unique_items(fresh)
    texts = [f"{first(i)['title']}. {first(i)['category']}" for i in range(opts.encoder_texts)]
    enc = Encoder.from_settings(settings.model_copy(update={"encoder_cache_size": 0}))
    _say(progress, f"raw encoder: {len(texts)} texts …")
    encoder, embeddings = encoder_throughput(
        enc, texts, settings.encoder_batch_size, opts.encoder_repeats
    )
    del enc
    return {
        "encoder_raw": encoder,
        "state_bytes_per_person": state_sizes(embeddings, settings),
        "pure_steps": pure_costs(embeddings, settings, events=100 if opts.quick else 400),
    }


def run(opts: Options, *, progress: bool = True) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-ready report."""
    from export.encoder_export import ensure_encoder
    from stream.broker import EmbeddedBroker
    from stream.settings import Settings

    started = time.monotonic()
    settings = Settings()
    load_start = _loadavg()
    ensure_encoder(settings, progress=progress)
    # the unique stream needs at most a few minutes of texts at any plausible CPU rate
    fresh, unique, zipf, sampler = _streams(opts, 2_000 if opts.quick else 60_000)
    measured = measure_in_process(opts, settings, fresh, progress)

    broker: EmbeddedBroker | None = None
    if settings.broker:
        bootstrap = settings.broker
    else:
        broker = EmbeddedBroker(log_dir=settings.data_dir / "logs").start()
        bootstrap = broker.bootstrap
    prefix = "bench" + uuid.uuid4().hex[:8]
    worker = WorkerProcess(
        _worker_env(settings, bootstrap, prefix),
        settings.data_dir / "logs" / "bench-pipeline-worker.log",
    )
    try:
        pids = {"worker": None, "broker": None if broker is None else broker.pid}
        streamed = _run_phases(
            opts, settings, bootstrap, prefix, worker, pids, (unique, zipf), progress
        )
    finally:
        worker.stop()
        if broker is not None:
            broker.stop()
    raw = measured["encoder_raw"]["sentences_per_s"]
    phases = streamed["pipeline"]
    report: dict[str, Any] = {
        "benchmark": "pipeline",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": opts.quick,
        "options": asdict(opts),
        "settings": _settings_used(settings),
        **measured,
        **streamed,
        "zipf": {
            "items": sampler.n,
            "s": sampler.s,
            "top_100_share": round(float(sampler.probabilities[:100].sum()), 3),
            "expected_distinct_items": round(
                sampler.expected_distinct(phases["zipf"]["events_produced"])
            ),
        },
        "ratios": {
            "pipeline_unique_vs_encoder": ratio(phases["unique"]["events_per_s"], raw),
            "pipeline_zipf_vs_encoder": ratio(phases["zipf"]["events_per_s"], raw),
        },
        "machine": {
            "cpus": os.cpu_count(),
            # BLAS threads matter: the worker's item-index matmuls run on the event loop
            "thread_env": {
                k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
            },
            "python": platform.python_version(),
            "load_average_start": load_start,
            "load_average_end": _loadavg(),
        },
        "broker": "embedded (Tansu)" if broker is not None else bootstrap,
        "seconds": round(time.monotonic() - started, 1),
    }
    report["targets"] = targets(report)
    return report


def _run_phases(
    opts: Options,
    settings: Settings,
    bootstrap: str,
    prefix: str,
    worker: WorkerProcess,
    pids: dict[str, int | None],
    streams: tuple[EventStream, EventStream],
    progress: bool,
) -> dict[str, Any]:
    """Start the worker, then: idle CPU, max rate per stream, latency at half the unique max."""
    from kafka import KafkaProducer

    _say(progress, f"starting a worker on {bootstrap} (topics {prefix}.*) …")
    worker.start()
    wsettings = settings.model_copy(update={"topic_prefix": prefix})
    watcher = Watcher(bootstrap, f"{prefix}-profiles-changelog", wsettings.recommendations_topic)
    watcher.start()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    pids = {**pids, "worker": worker.pid, "bench": os.getpid()}
    rig = Rig(bootstrap, worker, producer, watcher, wsettings.events_topic, pids, progress)
    try:
        idle = idle_phase(rig, 3.0 if opts.quick else 5.0)
        phases: dict[str, dict[str, Any]] = {}
        for stream in streams:
            phases[stream.name] = max_rate_phase(rig, stream, opts)
            _say(progress, f"{stream.name}: {phases[stream.name]['events_per_s']} events/s")
        rate = opts.latency_rate or max(1.0, (phases["unique"]["events_per_s"] or 1.0) / 2)
        latency = latency_phase(rig, streams[0], rate, opts)
        _say(progress, f"latency at {rate:.1f} events/s: {latency['latency_ms']}")
        final = worker.stats()
    finally:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)  # closing clients log noise
        watcher.stop()
        producer.close()
    return {
        "worker_idle": idle,
        "pipeline": phases,
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
    }


# --- output --------------------------------------------------------------------------------------


def _num(x: Any, fmt: str = ".1f") -> str:
    return "–" if x is None else format(x, fmt)


def format_table(report: Mapping[str, Any]) -> str:
    """The figures as a plain-text table, then the targets."""
    enc, lat = report["encoder_raw"], report["latency"]
    head = f"{'measure':<44} {'value':>12}"
    lines = [head, "-" * len(head)]

    def row(name: str, value: str) -> None:
        lines.append(f"{name:<44} {value:>12}")

    row(f"raw encoder, batch {enc['batch_size']} (sentences/s)", _num(enc["sentences_per_s"]))
    row("raw encoder, one sorted call (sentences/s)", _num(enc["sentences_per_s_one_sorted_call"]))
    for name, ph in report["pipeline"].items():
        w = ph["where_time_goes"]
        row(f"pipeline {name} (events/s)", _num(ph["events_per_s"]))
        cores = _num(w["cpu_cores_used"].get("worker"), ".2f")
        row(f"  {name}: worker CPU cores / encoder busy", f"{cores} / {w['encoder_busy_share']}")
        row(f"  {name}: cache hit rate", _num(w["cache_hit_rate"], ".3f"))
    row("worker idle (CPU cores)", _num(report["worker_idle"]["cpu_cores_used"]["worker"], ".3f"))
    pure = report["pure_steps"]
    row("pure steps in-process (ms/event)", _num(pure["ms_per_event"]["total"], ".2f"))
    for key, value in report["ratios"].items():
        row(key, _num(value, ".3f"))
    row(f"latency p50 at {lat['rate_target']:g} events/s (ms)", _num(lat["latency_ms"]["p50"]))
    row(f"latency p99 at {lat['rate_target']:g} events/s (ms)", _num(lat["latency_ms"]["p99"]))
    for n, sizes in report["state_bytes_per_person"].items():
        row(f"profile state after {n} events (bytes)", str(sizes["codec_bytes"]))
    lines.append("")
    for name, t in report["targets"].items():
        lines.append(
            f"target {name} {t['target']:g}: {_num(t['value'], 'g')} → "
            f"{'met' if t['met'] else 'NOT met'}"
        )
    tot = report["totals"]
    lines.append(
        f"events produced {tot['events_produced']}, learned {tot['events_learned']}, "
        f"worker saw {tot['worker_events_in']}; run took {report['seconds']:.0f} s"
    )
    return "\n".join(lines)


EPILOG = """\
what it does: starts the embedded broker (or uses CROSSPROFILE_BROKER) and one real worker on a
fresh topic prefix, measures the raw encoder on the unique stream's texts, then drives the worker
as hard as it goes with (i) unique events (every item and text new) and (ii) a Zipf(s) stream over
a fixed catalogue (the embedding cache hits), then times event → recommendation at half the unique
max rate. Worker settings (batch size, max wait, threads, …) come from CROSSPROFILE_* variables and
are recorded in the report. A default run takes about 3–5 minutes.

examples:
  crossprofile bench pipeline --json .data/bench/pipeline.json
  crossprofile bench pipeline --window 20 --warmup 5 --latency-duration 10 --json out.json
  CROSSPROFILE_ENCODER_BATCH_SIZE=64 crossprofile bench pipeline --json b64.json
  crossprofile bench pipeline --quick --json /tmp/quick.json        # ~1 minute, for tests

Figures vary with the machine's load; compare within one run. Tests never assert speeds.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossprofile bench pipeline",
        description="End-to-end events/s (unique and Zipf streams), event → recommendation "
        "latency, raw encoder throughput and profile state size, through the broker and a real "
        "worker, in one run.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--json", type=Path, metavar="FILE", help="write the report here")
    add("--warmup", type=float, metavar="S", help="seconds before each max-rate window (10)")
    add("--window", type=float, metavar="S", help="max-rate measuring window, seconds (30)")
    add("--latency-duration", type=float, metavar="S", help="paced latency phase, seconds (20)")
    add("--latency-rate", type=float, metavar="R", help="events/s (default: half unique max)")
    add("--zipf-items", type=int, metavar="N", help="catalogue size of the Zipf stream (10000)")
    add("--zipf-s", type=float, metavar="S", help="Zipf exponent (1.1)")
    add("--users", type=int, metavar="N", help="accounts events are spread over (5000)")
    add("--encoder-texts", type=int, metavar="N", help="texts for the raw encoder (1000)")
    add("--backlog", type=float, metavar="S", help="seconds of work kept queued (4)")
    add("--seed", type=int, metavar="N", help="seed of texts, users and draws (7)")
    add("--quick", action="store_true", help="a smoke run of about a minute (tests, CI)")
    add("--quiet", "-q", action="store_true", help="no progress or table")
    return parser


def options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Options:
    """Options from the command line, over the defaults (or the ``--quick`` ones)."""
    base = QUICK if args.quick else Options()
    flags = {
        "warmup_s": args.warmup, "window_s": args.window, "latency_s": args.latency_duration,
        "latency_rate": args.latency_rate, "zipf_items": args.zipf_items, "zipf_s": args.zipf_s,
        "users": args.users, "encoder_texts": args.encoder_texts, "backlog_s": args.backlog,
        "seed": args.seed,
    }  # fmt: skip
    opts = Options(**{**asdict(base), **{k: v for k, v in flags.items() if v is not None}})
    if opts.window_s < 1 or opts.latency_s < 1 or opts.warmup_s < 0:
        parser.error("--window and --latency-duration must be >= 1 s, --warmup >= 0")
    if min(opts.zipf_items, opts.users, opts.encoder_texts) < 1 or opts.zipf_s <= 0:
        parser.error("--zipf-items, --users, --encoder-texts must be >= 1 and --zipf-s > 0")
    if opts.latency_rate is not None and opts.latency_rate <= 0:
        parser.error("--latency-rate must be > 0")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``crossprofile bench pipeline``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    opts = options(args, parser)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    report = run(opts, progress=not args.quiet)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", "utf-8")
    if not args.quiet:
        print(format_table(report))
        if args.json is not None:
            print(f"report: {args.json}")
    return 0


__all__ = [
    "Options",
    "ZipfSampler",
    "distinct_texts",
    "format_table",
    "main",
    "percentiles",
    "run",
    "state_sizes",
    "sustained_rate",
]
