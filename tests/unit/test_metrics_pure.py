"""The pure parts of the worker metrics: stall detection, exposition, latency, readiness."""

from __future__ import annotations

import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

import stream.metrics as metrics_module
from stream.lag import PartitionLag, build_group_lag
from stream.metrics import StallDetector, WorkerMetrics

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(m: WorkerMetrics) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    for lab, v in samples.get(name, []):
        if all(lab.get(k) == want for k, want in labels.items()):
            return v
    return None


def row(committed: int | None, end: int, partition: int = 0) -> PartitionLag:
    return PartitionLag("g", "t", partition, current_offset=committed, log_end_offset=end)


# -- stall detection ------------------------------------------------------------------------
def test_stalled_after_the_configured_time_without_progress(
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = StallDetector(stall_after_s=10)
    with caplog.at_level(logging.INFO, logger="stream.metrics"):
        assert d.update([row(5, 9)], now=0) == []
        assert d.update([row(5, 12)], now=9.9) == []  # lag grows, offset stuck: not yet
        assert d.update([row(5, 13)], now=10.0) == [("g", "t", 0)]
        assert d.update([row(5, 14)], now=20.0) == []  # reported once
        assert d.stalled() == [("g", "t", 0)]
        d.update([row(6, 14)], now=21.0)  # progress
    assert d.stalled() == []
    messages = [r.getMessage() for r in caplog.records]
    assert sum("consumer stalled" in m for m in messages) == 1
    assert any("consumer stalled: group g topic t partition 0: lag 8" in m for m in messages)
    assert sum("consumer resumed" in m for m in messages) == 1


def test_no_lag_or_no_commit_is_never_stalled() -> None:
    d = StallDetector(stall_after_s=1)
    for t in range(5):
        d.update([row(9, 9, 0), row(None, 9, 1)], now=float(t))
    assert d.stalled() == []


def test_caught_up_resets_the_clock() -> None:
    d = StallDetector(stall_after_s=10)
    d.update([row(5, 9)], now=0)
    d.update([row(5, 5)], now=8)  # end offset read low (caught up): lag 0
    assert d.update([row(5, 9)], now=12) == []
    assert d.update([row(5, 9)], now=22) == [("g", "t", 0)]


def test_partitions_that_leave_are_forgotten() -> None:
    d = StallDetector(stall_after_s=1)
    d.update([row(1, 5)], now=0)
    d.update([row(1, 5)], now=2)
    assert d.stalled() == [("g", "t", 0)]
    d.update([], now=3)  # moved to another worker
    assert d.stalled() == []


# -- exposition -----------------------------------------------------------------------------
def test_lag_metrics_follow_the_exporters_conventions() -> None:
    m = WorkerMetrics("grp", stall_after_s=5)
    lag = build_group_lag(
        "grp",
        {("t.events", 0): 100, ("t.events", 1): 7, ("t.persons", 0): 3},
        {("t.events", 0): 90, ("t.persons", 0): 3},
    )
    m.record_lag(lag, now=0.0)
    m.record_lag(lag, now=6.0)
    s = parse(m)
    assert value(s, "kafka_consumergroup_lag", topic="t.events", partition="0") == 10
    assert value(s, "kafka_consumergroup_lag", topic="t.events", partition="1") == -1
    assert {lab["consumergroup"] for lab, _ in s["kafka_consumergroup_lag"]} == {"grp"}
    assert value(s, "kafka_consumergroup_lag_sum", consumergroup="grp", topic="t.events") == 10
    assert value(s, "kafka_consumergroup_lag_sum", consumergroup="grp", topic="t.persons") == 0
    assert value(s, "kafka_consumergroup_current_offset", topic="t.events", partition="1") == -1
    assert value(s, "kafka_topic_partition_current_offset", topic="t.events", partition="0") == 100
    assert value(s, "crossprofile_stalled_partitions", consumergroup="grp") == 1
    assert value(s, "crossprofile_partition_stalled", topic="t.events", partition="0") == 1
    assert value(s, "crossprofile_partition_stalled", topic="t.persons", partition="0") == 0
    assert value(s, "crossprofile_lag_read_errors_total") == 0


def test_before_any_reading_there_are_no_lag_series() -> None:
    s = parse(WorkerMetrics("grp"))
    assert "kafka_consumergroup_lag" not in s
    assert value(s, "crossprofile_stalled_partitions", consumergroup="grp") == 0
    assert value(s, "crossprofile_lag_age_seconds") == -1
    assert value(s, "crossprofile_broker_reachable") == 0


def test_each_instance_has_its_own_registry() -> None:
    a, b = WorkerMetrics("a"), WorkerMetrics("b")
    a.observe_encoder(8, 0.02)
    assert value(parse(a), "crossprofile_encoder_batch_size_count") == 1
    assert value(parse(b), "crossprofile_encoder_batch_size_count") == 0


def test_encoder_histograms() -> None:
    m = WorkerMetrics("g")
    m.observe_encoder(3, 0.004)
    m.observe_encoder(32, 0.2)
    s = parse(m)
    assert value(s, "crossprofile_encoder_batch_size_count") == 2
    assert value(s, "crossprofile_encoder_batch_size_sum") == 35
    assert value(s, "crossprofile_encoder_batch_size_bucket", le="4.0") == 1
    assert value(s, "crossprofile_encoder_batch_seconds_bucket", le="0.005") == 1


def test_event_to_recommendation_latency() -> None:
    m = WorkerMetrics("g")
    m.event_received("e1", now=10.0)
    m.event_received("e2", now=10.0)
    assert m.recommendation_sent("e1", now=10.3) == pytest.approx(0.3)
    assert m.recommendation_sent("e1", now=11.0) is None  # measured once
    assert m.recommendation_sent("other-worker", now=11.0) is None
    assert m.recommendation_sent("e2", deferred=True, now=12.0) == pytest.approx(2.0)
    s = parse(m)
    count = "crossprofile_event_to_recommendation_seconds_count"
    assert value(s, count, deferred="false") == 1
    assert value(s, count, deferred="true") == 1


def test_latency_tracking_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "MAX_TRACKED_EVENTS", 3)
    m = WorkerMetrics("g")
    for i in range(5):
        m.event_received(f"e{i}", now=float(i))
    assert m.recommendation_sent("e0", now=9.0) is None  # evicted
    assert m.recommendation_sent("e4", now=9.0) == pytest.approx(5.0)


def test_readiness_needs_a_recent_successful_broker_reading() -> None:
    m = WorkerMetrics("g", lag_refresh_s=1.0)
    ready, detail = m.readiness()
    assert not ready and detail["broker_error"] == "broker not checked yet"
    m.record_lag(build_group_lag("g", {}, {}))
    ready, detail = m.readiness()
    assert ready and detail == {"ready": True, "broker_reachable": True, "recovery_done": True}
    m.record_lag_error(ConnectionError("refused"))
    ready, detail = m.readiness()
    assert not ready and "refused" in detail["broker_error"]
    m.record_lag(build_group_lag("g", {}, {}), now=0.0)
    assert not m.broker_reachable(now=100.0)  # stale reading


def test_event_loop_lag_is_a_histogram_and_a_recent_summary() -> None:
    m = WorkerMetrics("g")
    assert m.loop_lag_summary()["readings"] == 0
    for ms in [1.0] * 98 + [40.0, 300.0]:
        m.observe_loop_lag(ms / 1000.0)
    s = parse(m)
    assert value(s, "crossprofile_event_loop_lag_seconds_count") == 100
    assert value(s, "crossprofile_event_loop_lag_seconds_bucket", le="0.0025") == 98
    summary = m.loop_lag_summary()
    assert summary == {"p50_ms": 1.0, "p99_ms": 300.0, "max_ms": 300.0, "readings": 100}


def test_event_loop_lag_probe_measures_a_blocked_loop() -> None:
    import asyncio
    import time

    m = WorkerMetrics("g")

    async def main() -> None:
        probe = asyncio.ensure_future(m.run_loop_lag_probe(every_s=0.01))
        await asyncio.sleep(0.03)
        time.sleep(0.2)  # the loop blocked: the probe's next wake-up is late by about this much
        await asyncio.sleep(0.03)
        probe.cancel()

    asyncio.run(main())
    assert m.loop_lag_summary()["max_ms"] >= 150.0


def test_the_lag_probe_times_its_loop_busy_and_idle() -> None:
    """Busy: between one select returning and the next (a blocking step); idle: inside select."""
    import asyncio
    import time

    m = WorkerMetrics("g")
    assert m.loop_busy.summary() == {"busy_seconds": None, "idle_seconds": None}
    assert value(parse(m), "crossprofile_event_loop_busy_seconds_total") is None

    async def main() -> None:
        probe = asyncio.ensure_future(m.run_loop_lag_probe(every_s=0.01))
        await asyncio.sleep(0.02)
        time.sleep(0.2)  # blocked: busy
        await asyncio.sleep(0.2)  # waiting: idle
        probe.cancel()

    asyncio.run(main())
    summary = m.loop_busy.summary()
    assert summary["busy_seconds"] >= 0.2 and summary["idle_seconds"] >= 0.15
    exported = value(parse(m), "crossprofile_event_loop_busy_seconds_total")
    assert exported == pytest.approx(m.loop_busy.busy_seconds)


def test_a_loop_without_a_python_selector_is_left_alone() -> None:
    from types import SimpleNamespace

    from stream.loop_busy import LoopBusy

    busy = LoopBusy()
    assert not busy.install(SimpleNamespace())  # type: ignore[arg-type]  # e.g. uvloop
    assert not busy.installed and busy.summary()["busy_seconds"] is None


def test_gc_pauses_are_a_histogram_per_generation_and_a_summary() -> None:
    import gc

    m = WorkerMetrics("g")
    m.gc.install()
    try:
        gc.collect(2)
        gc.collect(0)
    finally:
        m.gc.uninstall()
    assert m.gc not in gc.callbacks
    s = parse(m)
    assert value(s, "crossprofile_gc_pause_seconds_count", generation="2") >= 1
    assert value(s, "crossprofile_gc_pause_seconds_count", generation="0") >= 1
    summary = m.gc.summary()
    assert summary["collections"]["2"] >= 1 and summary["seconds"]["2"] > 0
    assert summary["recent_max_ms"]["2"] > 0


def test_the_gc_summary_survives_a_collection_on_another_thread() -> None:
    """A collection on the encoder's thread appends to the recent pauses while ``/stats`` reads
    them (a 500 once in CI): the summary copies them first. Without the copy this loop failed
    ~40 % of its calls."""
    import sys
    import threading

    from stream.gc_pauses import GcPauses

    pauses = GcPauses()
    pauses.recent.extend([("0", 0.001)] * 150)
    stop = threading.Event()

    def collections_elsewhere() -> None:
        while not stop.is_set():
            pauses.recent.append(("0", 0.001))

    writer = threading.Thread(target=collections_elsewhere)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    writer.start()
    try:
        for _ in range(500):
            assert pauses.summary()["recent_max_ms"]["0"] == 1.0
    finally:
        sys.setswitchinterval(interval)
        stop.set()
        writer.join()


def test_one_gc_timer_per_process() -> None:
    """A second worker app in the same process (tests) replaces the first's timer."""
    import gc

    first, second = WorkerMetrics("a"), WorkerMetrics("b")
    first.gc.install()
    second.gc.install()
    try:
        assert first.gc not in gc.callbacks and gc.callbacks.count(second.gc) == 1
    finally:
        second.gc.uninstall()
