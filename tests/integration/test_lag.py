"""``crossprofile lag`` against the real (embedded) broker: exact lag figures.

The messages go out in several multi-record batches per partition: on Tansu, ListOffsets
"latest" then answers the last batch's base offset + 1 instead of the log end, so a lag computed
from it would be wrong here — the test checks that, too.
"""

from __future__ import annotations

import io
import json
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from stream.broker import ensure_topics
from stream.lag import LagReader, main, render_table
from stream.settings import Settings

pytestmark = pytest.mark.integration

# partition -> sizes of the batches produced into it (flushed one by one)
BATCHES = {0: [10, 7, 13], 1: [25], 2: [4, 4]}
COMMIT = {0: 12, 1: 25}  # partition 2: nothing committed


def fresh(name: str) -> str:
    return f"lag-{name}-{uuid.uuid4().hex[:8]}"


def produce_batches(bootstrap: str, topic: str) -> dict[int, int]:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=1000, batch_size=1 << 20, acks="all"
    )
    try:
        for partition, sizes in BATCHES.items():
            for size in sizes:
                for i in range(size):
                    producer.send(topic, value=f"m{i}".encode(), partition=partition)
                producer.flush()  # one multi-record batch per flush
    finally:
        producer.close()
    return {p: sum(sizes) for p, sizes in BATCHES.items()}


def commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition(topic, p) for p in offsets])
        consumer.commit(
            {TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()}
        )
    finally:
        consumer.close()


@pytest.fixture
def lagged(bootstrap: str) -> tuple[str, str, dict[int, int]]:
    topic, group = fresh("topic"), fresh("group")
    ensure_topics(bootstrap, {topic: len(BATCHES)})
    ends = produce_batches(bootstrap, topic)
    commit(bootstrap, group, topic, COMMIT)
    return topic, group, ends


def test_lag_is_exact_per_partition(
    bootstrap: str, lagged: tuple[str, str, dict[int, int]]
) -> None:
    topic, group, ends = lagged
    with LagReader(bootstrap) as reader:
        g = reader.read(group, [topic])
    rows = {p.partition: p for p in g.partitions}
    assert sorted(rows) == [0, 1, 2]
    for partition, end in ends.items():
        assert rows[partition].log_end_offset == end
        assert rows[partition].current_offset == COMMIT.get(partition)
    assert rows[0].lag == 30 - 12
    assert rows[1].lag == 0
    assert rows[2].lag is None  # nothing committed: '-' like kafka-consumer-groups
    assert g.total_lag == 18
    assert g.topic_totals() == {topic: 18}
    assert g.members == ()  # nobody is consuming


def test_listoffsets_latest_alone_would_be_wrong_here(
    bootstrap: str, lagged: tuple[str, str, dict[int, int]]
) -> None:
    """Guards the test above: on the embedded broker ListOffsets-latest is short."""
    if Settings().broker:
        pytest.skip("a real Kafka cluster: ListOffsets is right there")
    topic, _group, ends = lagged
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        listed = consumer.end_offsets([TopicPartition(topic, p) for p in ends])
    finally:
        consumer.close()
    assert listed[TopicPartition(topic, 0)] == 10 + 7 + 1  # last batch's base offset + 1
    assert listed[TopicPartition(topic, 0)] != ends[0]


def test_topics_are_discovered_from_committed_offsets(
    bootstrap: str, lagged: tuple[str, str, dict[int, int]]
) -> None:
    topic, group, _ends = lagged
    with LagReader(bootstrap) as reader:
        g = reader.read(group)  # no topic named
        assert group in reader.list_groups()
    assert {p.topic for p in g.partitions} == {topic}
    assert g.total_lag == 18


def test_cli_json_table_and_watch(bootstrap: str, lagged: tuple[str, str, dict[int, int]]) -> None:
    topic, group, _ends = lagged
    args = ["--bootstrap", bootstrap, "--group", group, "--topic", topic]

    out = io.StringIO()
    assert main([*args, "--json"], stream=out) == 0
    doc = json.loads(out.getvalue())
    assert doc["total_lag"] == 18
    (g,) = doc["groups"]
    assert g["group"] == group and g["total_lag"] == 18
    assert g["topics"] == [{"topic": topic, "partitions": 3, "lag": 18}]
    by_part = {r["partition"]: r for r in g["partitions"]}
    assert by_part[0] == {
        "group": group,
        "topic": topic,
        "partition": 0,
        "current_offset": 12,
        "log_end_offset": 30,
        "lag": 18,
        "consumer_id": None,
        "host": None,
        "client_id": None,
    }
    assert by_part[2]["current_offset"] is None and by_part[2]["lag"] is None

    out = io.StringIO()
    assert main(args, stream=out) == 0
    table = out.getvalue().splitlines()
    assert table[0].split() == [
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ]
    assert table[1].split() == [group, topic, "0", "12", "30", "18", "-", "-", "-"]
    assert table[3].split()[:6] == [group, topic, "2", "-", "8", "-"]

    out = io.StringIO()
    assert main([*args, "--json", "--watch", "0.1", "--count", "2"], stream=out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert all(json.loads(line)["total_lag"] == 18 for line in lines)


def test_members_of_a_live_group_are_listed(bootstrap: str) -> None:
    topic, group = fresh("topic"), fresh("group")
    ensure_topics(bootstrap, {topic: 2})
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id="lag-test-client",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    try:
        deadline = time.monotonic() + 60
        while not consumer.assignment():
            assert time.monotonic() < deadline, "consumer never joined"
            consumer.poll(timeout_ms=200)
        with LagReader(bootstrap) as reader:
            g = reader.read(group, [topic])
        assert g.state == "Stable"
        assert len(g.members) == 1 and g.members[0].member_id
        assert [p.partition for p in g.partitions] == [0, 1]
        text = render_table([g])
        assert f"group {group} (state Stable): 1 member(s)" in text
        # real Kafka also reports the member's assignment; Tansu reports member ids only
        assigned = {tp for m in g.members for tp in m.assignment}
        assert assigned in (set(), {(topic, 0), (topic, 1)})
    finally:
        consumer.close()


def test_admin_client_with_tolerant_describe(bootstrap: str) -> None:
    """kafka-python's plain describe_groups breaks on Tansu's authorized-operations bits."""
    group = fresh("group")
    with LagReader(bootstrap) as reader:
        state, members = reader.describe(group)
    assert members == []
    assert state in (None, "Dead", "Empty", "Unknown")
