"""``/metrics``, ``/ready`` and stalled-partition detection against the real embedded broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from harness import Stack, Worker, event, item
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from prometheus_client.parser import text_string_to_metric_families

from stream.broker import ensure_topics
from stream.metrics import WorkerMetrics

pytestmark = pytest.mark.integration

CATALOGUE = [
    item("run-0", "Trail running shoes with grippy soles", "running"),
    item("run-1", "Lightweight marathon racing flats", "running"),
    item("run-2", "GPS running watch with heart rate", "running"),
    item("cook-0", "Cast iron skillet, 12 inch", "cooking"),
    item("cook-1", "Sourdough baking cookbook", "cooking"),
    item("jazz-0", "Kind of Blue — Miles Davis vinyl", "music"),
]


def http(worker: Worker, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET on the worker's web port."""
    url = f"http://127.0.0.1:{worker.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(worker: Worker) -> Samples:
    status, ctype, body = http(worker, "/metrics")
    assert status == 200, body
    assert ctype.startswith("text/plain"), ctype
    out: Samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    for lab, v in samples.get(name, []):
        if all(lab.get(k) == want for k, want in labels.items()):
            return v
    return None


def wait_for(
    worker: Worker, ok: Callable[[Samples], bool], what: str, timeout: float = 90.0
) -> Samples:
    deadline = time.monotonic() + timeout
    samples: Samples = {}
    while time.monotonic() < deadline:
        samples = scrape(worker)
        if ok(samples):
            return samples
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last scrape: {samples}")


def test_metrics_endpoint_counts_events_and_reports_lag(
    stack_factory: Callable[..., Stack],
) -> None:
    # index_ann_min_items=1: the worker ranks from the HNSW graph's candidates from its first
    # item on, so this test also runs that path end to end
    stack = stack_factory(lag_refresh_s="0.5", index_ann_min_items="1")
    worker = stack.worker()
    group, events_topic = stack.prefix, stack.topic("events")

    assert http(worker, "/health")[0] == 200
    deadline = time.monotonic() + 60
    while (ready := http(worker, "/ready"))[0] != 200:
        assert time.monotonic() < deadline, f"never ready: {ready}"
        time.sleep(0.3)
    assert '"broker_reachable":true' in ready[2].replace(" ", "")

    stack.send([{**it, "platforms": []} for it in CATALOGUE], topic="items")
    deadline = time.monotonic() + 90
    while worker.stats()["items"] < len(CATALOGUE):
        assert time.monotonic() < deadline, "catalogue not indexed"
        time.sleep(0.3)

    good = [
        event(1, "social", "@ann", "like", item=CATALOGUE[0]),
        event(2, "social", "@ann", "like", item=CATALOGUE[1]),
        event(3, "social", "@ann", "share", item=CATALOGUE[3]),
    ]
    stack.send([*good, b"{not json"])
    n_in = len(good) + 1

    samples = wait_for(
        worker,
        lambda s: (
            value(s, "crossprofile_events_in_total") == n_in
            and (value(s, "crossprofile_recommendations_out_total") or 0) >= 1
            and value(s, "kafka_consumergroup_lag_sum", consumergroup=group, topic=events_topic)
            == 0
            and any(
                lab["topic"] == events_topic and v == 0
                for lab, v in s.get("kafka_consumergroup_lag", [])
            )
        ),
        "events counted, recommendations out, events topic caught up",
    )

    assert value(samples, "crossprofile_events_rejected_total", reason="invalid_json") == 1
    assert sum(v for _, v in samples["crossprofile_events_rejected_total"]) == 1
    assert value(samples, "crossprofile_events_rejected_total", reason="raw_identifier") == 0

    # lag series per partition of the events topic, with the exporters' label names
    lag = [
        (lab, v) for lab, v in samples["kafka_consumergroup_lag"] if lab["topic"] == events_topic
    ]
    assert sorted(lab["partition"] for lab, _ in lag) == ["0", "1"]
    assert all(set(lab) == {"consumergroup", "topic", "partition"} for lab, _ in lag)
    assert all(lab["consumergroup"] == group for lab, _ in lag)
    assert all(v in (0, -1) for _, v in lag)  # -1: a partition that got no event yet
    topics = {lab["topic"] for lab, _ in samples["kafka_consumergroup_lag"]}
    assert topics == {events_topic, stack.topic("resolve"), stack.topic("persons")}
    assert value(samples, "crossprofile_stalled_partitions", consumergroup=group) == 0
    assert value(samples, "crossprofile_broker_reachable") == 1

    # histograms were observed
    assert (value(samples, "crossprofile_encoder_batch_size_count") or 0) >= 1
    assert (value(samples, "crossprofile_encoder_batch_seconds_count") or 0) >= 1
    assert value(samples, "crossprofile_encoder_texts_total") == value(
        samples, "crossprofile_encoder_batch_size_sum"
    )
    latency = value(samples, "crossprofile_event_to_recommendation_seconds_count", deferred="false")
    assert latency is not None and latency >= 1

    # state gauges
    assert value(samples, "crossprofile_items_indexed") == len(CATALOGUE)
    hnsw = value(samples, "crossprofile_index_recommendations_total", path="hnsw") or 0
    fallback = value(samples, "crossprofile_index_recommendations_total", path="fallback") or 0
    assert hnsw + fallback >= 1  # the graph answered (or fell back) for the recommendations
    assert value(samples, "crossprofile_index_graph", state="ready") == 1
    assert value(samples, "crossprofile_index_graph", state="building") == 0
    assert value(samples, "crossprofile_profiles_held") == 1
    assert value(samples, "crossprofile_persons_known") == 1
    assert value(samples, "crossprofile_recovery_completed") == 1
    assert value(samples, "crossprofile_recovery_in_progress") == 0

    # the old views still work
    assert worker.stats()["events_in"] == n_in


def _lagging_group(bootstrap: str) -> tuple[str, str]:
    topic, group = f"stall-{uuid.uuid4().hex[:8]}", f"stall-g-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, {topic: 2})
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=200)
    for _ in range(20):
        producer.send(topic, value=b"x", partition=0)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    consumer.commit(
        {
            TopicPartition(topic, 0): OffsetAndMetadata(5, "", -1),
            TopicPartition(topic, 1): OffsetAndMetadata(0, "", -1),
        }
    )
    consumer.close()
    return topic, group


def test_a_partition_without_progress_is_reported_stalled(
    bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Lag > 0 and a committed offset that does not move: gauge goes to 1, one log line."""
    topic, group = _lagging_group(bootstrap)
    metrics = WorkerMetrics(group, stall_after_s=1.0, lag_refresh_s=0.2)

    async def run() -> None:
        task = asyncio.create_task(
            metrics.run_lag_refresher(bootstrap, [topic], lambda: {(topic, 0), (topic, 1)})
        )
        try:
            deadline = time.monotonic() + 30
            while not metrics.stalls.stalled():
                assert time.monotonic() < deadline, "never flagged as stalled"
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # a few more readings: still one warning only
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    with caplog.at_level(logging.WARNING, logger="stream.metrics"):
        asyncio.run(run())

    samples: dict[str, Any] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), s.value))
    assert value(samples, "crossprofile_stalled_partitions", consumergroup=group) == 1
    assert value(samples, "crossprofile_partition_stalled", topic=topic, partition="0") == 1
    assert value(samples, "crossprofile_partition_stalled", topic=topic, partition="1") == 0
    assert value(samples, "kafka_consumergroup_lag", topic=topic, partition="0") == 15
    assert value(samples, "kafka_consumergroup_lag_sum", consumergroup=group, topic=topic) == 15
    stalls = [r for r in caplog.records if "consumer stalled" in r.getMessage()]
    assert len(stalls) == 1
    assert f"topic {topic} partition 0: lag 15" in stalls[0].getMessage()
    ready, detail = metrics.readiness()
    assert ready and detail["broker_reachable"]
