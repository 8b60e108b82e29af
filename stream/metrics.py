"""Prometheus metrics of one worker (``/metrics``) and its readiness (``/ready``).

Every app gets its own :class:`prometheus_client.CollectorRegistry` (never the global one), so
several apps in one process (tests) do not mix. What is exported (see ``docs/operations.md``):

- ``kafka_consumergroup_lag{consumergroup,topic,partition}`` and
  ``kafka_consumergroup_lag_sum{consumergroup,topic}`` — the names of the common Kafka
  exporters — plus ``kafka_consumergroup_current_offset`` and
  ``kafka_topic_partition_current_offset`` (log-end offset). Each worker reports the input
  partitions *assigned to it*, so summing over workers gives the group's total and every
  partition appears on exactly one worker. Lag is ``-1`` where the group has committed
  nothing yet (kafka_exporter's convention; left out of the sum). Offsets are read from the
  broker every ``lag_refresh_s`` by a background task, never at scrape time.
- ``crossprofile_stalled_partitions{consumergroup}`` and
  ``crossprofile_partition_stalled{consumergroup,topic,partition}``: lag > 0 and the
  committed offset has not moved for ``stall_after_s`` (a warning is logged once per stall).
- counters from :class:`stream.app.Counters`: events in, rejected by reason, recommendations
  out, duplicates, merges, erasures, encoder texts;
- histograms: encoder batch size and seconds, event → recommendation seconds (from the moment
  this worker's ingest agent received the event to the recommendation's send; observed when
  the same worker ingests the event and serves the person, i.e. all of them with one worker);
  event-loop lag (how late a timer on the worker's event loop wakes: every agent, send and
  fetch hand-off shares that one thread, so lag there is latency everywhere);
- gauges: profiles held, persons and accounts known, items indexed, recovery and rebalance
  state, broker reachability.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from .faust_compat import consumer_counters
from .gc_pauses import GcPauses
from .ingest import REASONS
from .lag import GroupLag, LagReader, PartitionLag, consumed_topics
from .loop_busy import LoopBusy
from .recommend import GRAPH_STATES

if TYPE_CHECKING:
    import faust

    from stream.settings import Settings

__all__ = [
    "CONTENT_TYPE",
    "StallDetector",
    "WorkerMetrics",
    "install_metrics",
]

logger = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
ENCODER_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: Events waiting for their recommendation (to measure latency); oldest are dropped beyond it.
MAX_TRACKED_EVENTS = 100_000
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
#: the loop-lag probe's timer period, and how many recent readings ``/stats`` summarises
LOOP_LAG_EVERY_S = 0.05
LOOP_LAG_RECENT = 200  # ten seconds at the period above
GC_PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)

Key = tuple[str, str, int]  # group, topic, partition


# -- stalled partitions (pure) ---------------------------------------------------------------
@dataclass
class _Progress:
    committed: int | None
    since: float
    stalled: bool = False


class StallDetector:
    """Flags partitions whose lag is > 0 while their committed offset has not moved for
    ``stall_after_s`` seconds. Feed it every lag reading with :meth:`update`.

    >>> d = StallDetector(stall_after_s=30)
    >>> row = PartitionLag("g", "t", 0, current_offset=5, log_end_offset=9)
    >>> d.update([row], now=0.0), d.update([row], now=31.0)
    ([], [('g', 't', 0)])
    >>> d.stalled()
    [('g', 't', 0)]
    >>> moved = PartitionLag("g", "t", 0, current_offset=6, log_end_offset=9)
    >>> d.update([moved], now=32.0), d.stalled()
    ([], [])
    """

    def __init__(self, stall_after_s: float) -> None:
        self.stall_after_s = stall_after_s
        self._seen: dict[Key, _Progress] = {}

    def update(self, rows: Iterable[PartitionLag], now: float) -> list[Key]:
        """Record a reading; return the partitions that *became* stalled with it.

        Partitions missing from ``rows`` are forgotten (they moved to another worker). A
        partition without a committed offset is never called stalled (its lag is unknown).
        """
        seen: dict[Key, _Progress] = {}
        newly: list[Key] = []
        for row in rows:
            key = (row.group, row.topic, row.partition)
            prev = self._seen.get(key)
            lag = row.lag
            if prev is None or prev.committed != row.current_offset or not lag:
                seen[key] = _Progress(row.current_offset, now)
                if prev is not None and prev.stalled:
                    logger.info(
                        "consumer resumed: group %s topic %s partition %d (committed %s, lag %s)",
                        *key,
                        row.current_offset,
                        lag,
                    )
                continue
            seen[key] = prev
            if not prev.stalled and now - prev.since >= self.stall_after_s:
                prev.stalled = True
                newly.append(key)
                logger.warning(
                    "consumer stalled: group %s topic %s partition %d: lag %d, committed offset "
                    "%d unchanged for %.0fs (stall_after_s=%g)",
                    *key,
                    lag,
                    row.current_offset,
                    now - prev.since,
                    self.stall_after_s,
                )
        self._seen = seen
        return newly

    def stalled(self) -> list[Key]:
        return sorted(k for k, p in self._seen.items() if p.stalled)

    def is_stalled(self, key: Key) -> bool:
        p = self._seen.get(key)
        return p is not None and p.stalled


# -- the metrics of one worker -----------------------------------------------------------------
class WorkerMetrics:
    """Histograms observed by the agents, lag readings, and a collector for the rest.

    ``app`` may be None (unit tests): then only histograms, lag and stall metrics are exported.
    """

    def __init__(
        self,
        group: str,
        *,
        stall_after_s: float = 60.0,
        lag_refresh_s: float = 5.0,
        app: faust.App | None = None,
    ) -> None:
        self.group = group
        self.lag_refresh_s = lag_refresh_s
        self.app = app
        self.registry = CollectorRegistry(auto_describe=True)
        self.encoder_batch_size = Histogram(
            "crossprofile_encoder_batch_size",
            "Texts per encoder call.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.encoder_batch_seconds = Histogram(
            "crossprofile_encoder_batch_seconds",
            "Seconds per encoder call (tokenize + ONNX run, off the event loop).",
            buckets=ENCODER_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.event_to_recommendation_seconds = Histogram(
            "crossprofile_event_to_recommendation_seconds",
            "Seconds from the worker receiving an event to sending the recommendation it "
            "triggered (deferred: sent by the refresh timer at the end of the interval).",
            ["deferred"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.event_loop_lag_seconds = Histogram(
            "crossprofile_event_loop_lag_seconds",
            f"How late a {LOOP_LAG_EVERY_S * 1000:g} ms timer on the worker's event loop woke "
            "(the loop busy with other work, or waiting for the GIL).",
            buckets=LOOP_LAG_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag_recent: deque[float] = deque(maxlen=LOOP_LAG_RECENT)
        self.gc_pause_seconds = Histogram(
            "crossprofile_gc_pause_seconds",
            "Seconds each collection of the cyclic garbage collector stopped the worker "
            "(generation 2: a full collection).",
            ["generation"],
            buckets=GC_PAUSE_BUCKETS,
            registry=self.registry,
        )
        #: timed collections; installed into gc.callbacks by :func:`install_metrics`
        self.gc = GcPauses(lambda g, s: self.gc_pause_seconds.labels(generation=g).observe(s))
        #: the event loop's busy time; installed on the worker's loop by the lag probe
        self.loop_busy = LoopBusy()
        self.stalls = StallDetector(stall_after_s)
        self.lag: GroupLag | None = None
        self.lag_read_at: float | None = None  # monotonic
        self.lag_errors = 0
        self.broker_ok_at: float | None = None  # monotonic
        self.broker_error: str | None = None
        self._received: OrderedDict[str, float] = OrderedDict()
        self.registry.register(_Collector(self))

    # -- observations from the agents -------------------------------------------------------
    def observe_encoder(self, texts: int, seconds: float) -> None:
        self.encoder_batch_size.observe(texts)
        self.encoder_batch_seconds.observe(seconds)

    def event_received(self, event_id: str, now: float | None = None) -> None:
        """The ingest agent accepted ``event_id`` (start of the latency clock)."""
        self._received[event_id] = time.monotonic() if now is None else now
        self._received.move_to_end(event_id)
        while len(self._received) > MAX_TRACKED_EVENTS:
            self._received.popitem(last=False)

    def recommendation_sent(
        self, event_id: str, *, deferred: bool = False, now: float | None = None
    ) -> float | None:
        """A recommendation triggered by ``event_id`` went out; returns the latency observed."""
        t0 = self._received.pop(event_id, None)
        if t0 is None:
            return None  # ingested by another worker (or already measured)
        seconds = max(0.0, (time.monotonic() if now is None else now) - t0)
        self.event_to_recommendation_seconds.labels(deferred=str(deferred).lower()).observe(seconds)
        return seconds

    def observe_loop_lag(self, seconds: float) -> None:
        self.event_loop_lag_seconds.observe(seconds)
        self.loop_lag_recent.append(seconds)

    def loop_lag_summary(self) -> dict[str, Any]:
        """p50 / p99 / max of the recent loop-lag readings, in ms (for ``/stats``)."""
        if not self.loop_lag_recent:
            return {"p50_ms": None, "p99_ms": None, "max_ms": None, "readings": 0}
        xs = sorted(self.loop_lag_recent)

        def pick(q: float) -> float:
            return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000.0, 2)

        return {
            "p50_ms": pick(0.5),
            "p99_ms": pick(0.99),
            "max_ms": round(xs[-1] * 1000.0, 2),
            "readings": len(xs),
        }

    async def run_loop_lag_probe(self, every_s: float = LOOP_LAG_EVERY_S) -> None:
        """Sleep ``every_s`` again and again; how much later than asked each wake-up comes is
        the event loop's lag."""
        loop = asyncio.get_running_loop()
        self.loop_busy.install(loop)
        while True:
            t0 = loop.time()
            await asyncio.sleep(every_s)
            self.observe_loop_lag(max(0.0, loop.time() - t0 - every_s))

    # -- lag -------------------------------------------------------------------------------
    def record_lag(self, lag: GroupLag, now: float | None = None) -> list[Key]:
        """Store a lag reading and update stall detection; returns newly stalled partitions."""
        t = time.monotonic() if now is None else now
        self.lag = lag
        self.lag_read_at = t
        self.broker_ok_at = t
        self.broker_error = None
        return self.stalls.update(lag.partitions, t)

    def record_lag_error(self, exc: BaseException) -> None:
        self.lag_errors += 1
        self.broker_error = repr(exc)

    def broker_reachable(self, now: float | None = None) -> bool:
        """The last lag reading succeeded, and recently (within 3 refresh intervals + 10 s)."""
        if self.broker_ok_at is None or self.broker_error is not None:
            return False
        t = time.monotonic() if now is None else now
        return t - self.broker_ok_at <= 3 * self.lag_refresh_s + 10.0

    # -- readiness -------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details) for ``/ready``: broker reachable and table recovery done."""
        broker = self.broker_reachable()
        recovered, in_recovery = _recovery_state(self.app)
        detail: dict[str, Any] = {
            "ready": broker and recovered and not in_recovery,
            "broker_reachable": broker,
            "recovery_done": recovered and not in_recovery,
        }
        if not broker:
            detail["broker_error"] = self.broker_error or "broker not checked yet"
        return bool(detail["ready"]), detail

    def exposition(self) -> bytes:
        """The Prometheus text format (version 0.0.4)."""
        return bytes(generate_latest(self.registry))

    # -- the background reader --------------------------------------------------------------
    async def run_lag_refresher(
        self,
        bootstrap: str,
        topics: Sequence[str],
        assigned: Callable[[], set[tuple[str, int]] | None],
    ) -> None:
        """Read the lag of this worker's partitions every ``lag_refresh_s``, forever.

        The kafka-python calls block, so they run on a dedicated thread; the first reading
        happens at once (``/ready`` needs it).
        """
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lag-reader")
        reader = LagReader(bootstrap, timeout_s=max(2.0, min(10.0, self.lag_refresh_s * 2)))
        loop = asyncio.get_running_loop()
        wanted = set(topics)
        try:
            while True:
                mine = assigned()
                parts = None if mine is None else {tp for tp in mine if tp[0] in wanted}
                try:
                    read = functools.partial(
                        reader.read, self.group, topics, discover=False, partitions=parts
                    )
                    lag = await loop.run_in_executor(executor, read)
                    self.record_lag(lag)
                except Exception as exc:
                    if self.broker_error is None:
                        logger.warning("reading consumer lag failed: %r", exc)
                    self.record_lag_error(exc)
                    reader.close()  # a fresh connection next time
                await asyncio.sleep(self.lag_refresh_s)
        finally:
            executor.submit(reader.close)
            executor.shutdown(wait=False)


def _recovery_state(app: Any) -> tuple[bool, bool]:
    """(first recovery completed, recovering now) of a Faust app; (True, False) without one."""
    if app is None:
        return True, False
    try:
        recovery = app.tables.recovery
        return bool(recovery.completed.is_set()), bool(recovery.in_recovery)
    except Exception:
        return False, False


def _table_sizes(app: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        identity: Mapping[str, Any] = app.tables["identity"]
        keys = [str(k) for k in list(identity.keys())]
        out["persons"] = sum(1 for k in keys if k.startswith("P:"))
        out["accounts"] = sum(1 for k in keys if k.startswith("a:"))
    except Exception:
        logger.debug("identity table not readable", exc_info=True)
    try:
        out["profiles"] = len(app.tables["profiles"])
    except Exception:
        logger.debug("profiles table not readable", exc_info=True)
    return out


class _Collector(Collector):
    """Computes everything that is a reading, not an observation, at scrape time."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.m = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # dynamic: collected at scrape time

    def collect(self) -> Iterator[Metric]:
        yield from self._lag()
        if self.m.loop_busy.installed:
            busy = CounterMetricFamily(
                "crossprofile_event_loop_busy_seconds",
                "Seconds the worker's event loop spent running callbacks rather than waiting "
                "for I/O or timers; its rate is the loop's busy share (near 1: the loop is the "
                "worker's bound).",
            )
            busy.add_metric([], self.m.loop_busy.busy_seconds)
            yield busy
        app = self.m.app
        if app is None:
            return
        yield from self._counters(app)
        yield from self._state(app)

    def _lag(self) -> Iterator[Metric]:
        m = self.m
        group = m.group
        lag = GaugeMetricFamily(
            "kafka_consumergroup_lag",
            "Log-end offset minus committed offset per partition (-1: nothing committed).",
            labels=["consumergroup", "topic", "partition"],
        )
        lag_sum = GaugeMetricFamily(
            "kafka_consumergroup_lag_sum",
            "Sum of the known lags of this worker's partitions, per topic.",
            labels=["consumergroup", "topic"],
        )
        current = GaugeMetricFamily(
            "kafka_consumergroup_current_offset",
            "Committed offset per partition (-1: nothing committed).",
            labels=["consumergroup", "topic", "partition"],
        )
        end = GaugeMetricFamily(
            "kafka_topic_partition_current_offset",
            "Log-end offset (next offset to be written) per partition.",
            labels=["topic", "partition"],
        )
        stalled = GaugeMetricFamily(
            "crossprofile_partition_stalled",
            "1 while the partition has lag > 0 and no committed progress for stall_after_s.",
            labels=["consumergroup", "topic", "partition"],
        )
        if m.lag is not None:
            sums: dict[str, int] = {}
            for p in m.lag.partitions:
                labels = [group, p.topic, str(p.partition)]
                lag.add_metric(labels, -1 if p.lag is None else p.lag)
                current.add_metric(labels, -1 if p.current_offset is None else p.current_offset)
                end.add_metric([p.topic, str(p.partition)], p.log_end_offset)
                stalled.add_metric(
                    labels, 1 if m.stalls.is_stalled((group, p.topic, p.partition)) else 0
                )
                sums[p.topic] = sums.get(p.topic, 0) + (p.lag or 0)
            for topic, total in sums.items():
                lag_sum.add_metric([group, topic], total)
        yield from (lag, lag_sum, current, end, stalled)
        count = GaugeMetricFamily(
            "crossprofile_stalled_partitions",
            "Partitions of this worker with lag > 0 and no committed progress for "
            "stall_after_s seconds.",
            labels=["consumergroup"],
        )
        count.add_metric([group], len(m.stalls.stalled()))
        yield count
        age = GaugeMetricFamily(
            "crossprofile_lag_age_seconds",
            "Seconds since the last successful lag reading (-1: none yet).",
        )
        age.add_metric([], -1 if m.lag_read_at is None else time.monotonic() - m.lag_read_at)
        yield age
        errors = CounterMetricFamily(
            "crossprofile_lag_read_errors", "Failed lag readings (broker unreachable, timeout)."
        )
        errors.add_metric([], m.lag_errors)
        yield errors
        up = GaugeMetricFamily(
            "crossprofile_broker_reachable", "1 if the last lag reading reached the broker."
        )
        up.add_metric([], 1 if m.broker_reachable() else 0)
        yield up

    def _counters(self, app: Any) -> Iterator[Metric]:
        try:
            c = app.runtime.counters
            rt = app.runtime
        except AttributeError:
            return
        simple = [
            ("crossprofile_events_in", "Events read from the events topic.", c.events_in),
            (
                "crossprofile_recommendations_out",
                "Recommendation messages sent.",
                c.recommendations_out,
            ),
            ("crossprofile_duplicates", "Events skipped as already seen.", c.duplicates),
            (
                "crossprofile_left_to_redelivery",
                "Events of batches overtaken by a rebalance, left unacked for redelivery.",
                c.left_to_redelivery,
            ),
            (
                "crossprofile_offset_holes_refetched",
                "Holes a rebalance left in the acked offsets, read again, not committed past.",
                consumer_counters(app)["offset_holes_refetched"],
            ),
            ("crossprofile_merges", "Person merges (two persons joined).", c.merges),
            (
                "crossprofile_identity_inline",
                "Events whose person ingest resolved itself, without the resolve topic's hop.",
                c.identity_inline,
            ),
            (
                "crossprofile_profile_inline",
                "Events learned by the worker that resolved them, without the persons topic's hop.",
                c.profile_inline,
            ),
            ("crossprofile_erased", "Persons erased.", c.erased),
            ("crossprofile_encoder_texts", "Texts embedded by the encoder.", c.encoder_texts),
            ("crossprofile_encoder_batches", "Encoder calls.", c.encoder_batches),
            (
                "crossprofile_item_vectors_shared",
                "Items indexed with a vector published on the items topic, not encoded here.",
                c.item_vectors_shared,
            ),
        ]
        for name, doc, value in simple:
            fam = CounterMetricFamily(name, doc)
            fam.add_metric([], value)
            yield fam
        rejected = CounterMetricFamily(
            "crossprofile_events_rejected",
            "Events sent to the dead-letter topic, by reason.",
            labels=["reason"],
        )
        counts = {reason: 0 for reason in REASONS} | dict(c.events_rejected)
        for reason, n in sorted(counts.items()):
            rejected.add_metric([reason], n)  # all reasons from the start: rate() works
        yield rejected
        try:
            cache = CounterMetricFamily(
                "crossprofile_encoder_cache", "Encoder cache look-ups.", labels=["result"]
            )
            cache.add_metric(["hit"], rt.encoder.cache_hits)
            cache.add_metric(["miss"], rt.encoder.cache_misses)
            yield cache
        except AttributeError:
            pass
        try:
            items = GaugeMetricFamily("crossprofile_items_indexed", "Items in the item index.")
            items.add_metric([], len(rt.index))
            yield items
            answers = CounterMetricFamily(
                "crossprofile_index_recommendations",
                "Recommendations by how the item index scored them: hnsw (graph candidates) or "
                "fallback (the graph's candidates were too few after filters; every item scored).",
                labels=["path"],
            )
            answers.add_metric(["hnsw"], rt.index.ann_answers)
            answers.add_metric(["fallback"], rt.index.ann_fallbacks)
            yield answers
            graph = GaugeMetricFamily(
                "crossprofile_index_graph",
                "The item index's HNSW graph: 1 for its state now (off: exact only; waiting: "
                "fewer items than the threshold; building: in a background thread, answers "
                "exact meanwhile; ready: candidates come from it), 0 for the others.",
                labels=["state"],
            )
            now = rt.index.graph_state()
            for state in GRAPH_STATES:
                graph.add_metric([state], 1 if state == now else 0)
            yield graph
        except (TypeError, AttributeError):
            pass

    def _state(self, app: Any) -> Iterator[Metric]:
        sizes = _table_sizes(app)
        docs = {
            "profiles": "Interest profiles held by this worker (its partitions).",
            "persons": "Persons in the identity graph replica on this worker.",
            "accounts": "Accounts in the identity graph replica on this worker.",
        }
        names = {
            "profiles": "crossprofile_profiles_held",
            "persons": "crossprofile_persons_known",
            "accounts": "crossprofile_accounts_known",
        }
        for key, value in sizes.items():
            fam = GaugeMetricFamily(names[key], docs[key])
            fam.add_metric([], value)
            yield fam
        recovered, in_recovery = _recovery_state(app)
        for name, doc, value in (
            ("crossprofile_recovery_in_progress", "1 while tables recover.", in_recovery),
            (
                "crossprofile_recovery_completed",
                "1 once the first table recovery has completed.",
                recovered,
            ),
            (
                "crossprofile_rebalancing",
                "1 while the consumer group rebalances.",
                bool(getattr(app, "rebalancing", False)),
            ),
        ):
            fam = GaugeMetricFamily(name, doc)
            fam.add_metric([], 1 if value else 0)
            yield fam
        try:
            recovery = app.tables.recovery
            remaining = GaugeMetricFamily(
                "crossprofile_recovery_remaining_records",
                "Changelog records still to apply.",
                labels=["kind"],
            )
            remaining.add_metric(["active"], recovery.active_remaining_total())
            remaining.add_metric(["standby"], recovery.standby_remaining_total())
            yield remaining
        except Exception:
            logger.debug("recovery state not readable", exc_info=True)


# -- wiring into a Faust app --------------------------------------------------------------------
def _bootstrap_of(app: Any) -> str:
    urls = app.conf.broker
    return ",".join(f"{u.host}:{u.port or 9092}" for u in urls)


def _assigned(app: Any) -> Callable[[], set[tuple[str, int]] | None]:
    def assigned() -> set[tuple[str, int]] | None:
        try:
            return {(tp.topic, tp.partition) for tp in set(app.consumer.assignment())}
        except Exception:  # consumer not started yet
            return set()

    return assigned


def install_metrics(app: faust.App, settings: Settings | None = None) -> WorkerMetrics:
    """Create the app's :class:`WorkerMetrics`, hand it to the agents (``app.runtime.metrics``)
    and start the lag reader as an app task. Call before the worker starts."""
    rt = app.runtime  # type: ignore[attr-defined]
    s: Settings = settings or rt.settings
    metrics = WorkerMetrics(
        s.app_id, stall_after_s=s.stall_after_s, lag_refresh_s=s.lag_refresh_s, app=app
    )
    rt.metrics = metrics
    bootstrap = _bootstrap_of(app)
    topics = consumed_topics(s)

    async def refresh_lag() -> None:
        await metrics.run_lag_refresher(bootstrap, topics, _assigned(app))

    async def probe_loop_lag() -> None:
        await metrics.run_loop_lag_probe()

    app.task(refresh_lag)
    app.task(probe_loop_lag)
    metrics.gc.install()
    return metrics
