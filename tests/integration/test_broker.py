"""The embedded broker (Tansu) and our Kafka look-ups, against a real broker process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from stream.broker import (
    BrokerError,
    EmbeddedBroker,
    committed_offsets,
    ensure_topics,
    kafka_for,
    log_end_offsets,
    port_is_free,
    tansu_binary,
)
from stream.settings import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_dir=tmp_path_factory.mktemp("tansu")) as b:
        yield b


def _name() -> str:
    return "tb" + uuid.uuid4().hex[:10]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_binary_is_shipped() -> None:
    path = tansu_binary()
    assert path.is_file() and os.access(path, os.X_OK)


def test_starts_answers_and_stops_cleanly() -> None:
    b = EmbeddedBroker()
    b.start()
    pid, port, log = b.pid, b.port, b.log_path
    assert pid is not None and log is not None and log.exists()
    assert b.running and b.bootstrap == f"127.0.0.1:{port}"
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    try:
        admin.list_topics()
    finally:
        admin.close()
    b.stop()
    assert not b.running and _gone(pid) and port_is_free(port)
    assert not log.exists()  # temporary log removed
    b.stop()  # idempotent


def test_refuses_a_port_in_use(broker: EmbeddedBroker) -> None:
    with pytest.raises(BrokerError, match="in use"):
        EmbeddedBroker(broker.port).start()
    assert broker.running


def test_kafka_for_prefers_the_configured_broker() -> None:
    with kafka_for(Settings(broker="kafka.example:9092")) as address:
        assert address == "kafka.example:9092"


def test_kafka_for_starts_and_stops_an_embedded_broker() -> None:
    with kafka_for(Settings(broker=None)) as address:
        port = int(address.rsplit(":", 1)[1])
        ensure_topics(address, {_name(): 1})
    assert port_is_free(port)


def test_ensure_topics_creates_partition_counts(broker: EmbeddedBroker) -> None:
    a, b = _name(), _name()
    ensure_topics(broker.bootstrap, {a: 3, b: 1}, compacted={b})
    ensure_topics(broker.bootstrap, {a: 3, b: 1}, compacted={b})  # idempotent
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        got = {d["name"]: len(d["partitions"]) for d in admin.describe_topics([a, b])}
    finally:
        admin.close()
    assert got == {a: 3, b: 1}
    with pytest.raises(ValueError):
        ensure_topics(broker.bootstrap, {a: 3}, compacted={b})


def test_log_end_offsets_are_exact_across_many_batches(broker: EmbeddedBroker) -> None:
    topic = _name()
    ensure_topics(broker.bootstrap, {topic: 3})
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50)
    sizes = {0: [10, 7, 13], 1: [25], 2: []}  # records per batch (one flush per batch)
    try:
        for batch in range(3):
            for partition, batches in sizes.items():
                if batch < len(batches):
                    for i in range(batches[batch]):
                        producer.send(topic, value=b"%d" % i, partition=partition)
            producer.flush()
    finally:
        producer.close()
    expected = {p: sum(b) for p, b in sizes.items()}
    # Tansu's ListOffsets-latest says {0: 18, 1: 1, 2: 0} here: the last batch's base + 1.
    assert log_end_offsets(broker.bootstrap, topic) == expected
    assert log_end_offsets(broker.bootstrap, topic, [1]) == {1: 25}
    with pytest.raises(BrokerError):
        log_end_offsets(broker.bootstrap, _name(), timeout_s=1.0)


def test_fetch_range_reads_exactly_a_hole_from_inside_a_batch(broker: EmbeddedBroker) -> None:
    """The refill read (gap 11): offsets 5..8 of a partition written as batches of 10 and 10."""
    import asyncio

    from aiokafka.structs import TopicPartition as AioTP

    from stream.faust_compat import fetch_range

    topic = _name()
    ensure_topics(broker.bootstrap, {topic: 1})
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50)
    try:
        for batch in range(2):
            for i in range(10):
                producer.send(topic, value=b"%d" % (batch * 10 + i), partition=0)
            producer.flush()
    finally:
        producer.close()
    tp = AioTP(topic, 0)
    records, complete = asyncio.run(fetch_range(broker.bootstrap, tp, 5, 9, timeout_s=10.0))
    assert complete and [r.offset for r in records] == [5, 6, 7, 8]
    assert [r.value for r in records] == [b"5", b"6", b"7", b"8"]
    # across the batch boundary, up to the log end
    records, complete = asyncio.run(fetch_range(broker.bootstrap, tp, 9, 20, timeout_s=10.0))
    assert complete and [r.offset for r in records] == list(range(9, 20))
    # past the log end: nothing there yet, so no evidence either way
    records, complete = asyncio.run(fetch_range(broker.bootstrap, tp, 20, 25, timeout_s=1.0))
    assert not complete and records == []


def test_committed_offsets_for_explicit_partitions(broker: EmbeddedBroker) -> None:
    topic, group = _name(), _name()
    ensure_topics(broker.bootstrap, {topic: 3})
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False
    )
    try:
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 2)])
        consumer.commit(
            {
                TopicPartition(topic, 0): OffsetAndMetadata(7, "", -1),
                TopicPartition(topic, 2): OffsetAndMetadata(3, "", -1),
            }
        )
    finally:
        consumer.close()
    assert committed_offsets(broker.bootstrap, group, topic, [0, 1, 2]) == {0: 7, 1: None, 2: 3}
    assert committed_offsets(broker.bootstrap, _name(), topic, [0, 1]) == {0: None, 1: None}


def test_cli_prints_the_address_and_stops_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "tansu.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream.broker", "--log", str(log)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        assert lines[1].startswith("export CROSSPROFILE_BROKER=127.0.0.1:"), lines
        address = lines[1].strip().split("=", 1)[1]
        ensure_topics(address, {_name(): 1})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 5
    while not port_is_free(int(address.rsplit(":", 1)[1])) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert port_is_free(int(address.rsplit(":", 1)[1]))
    assert "tansu broker" in log.read_text()
