"""The pure part of ``crossprofile lag``: rows, totals, rendering, member parsing, the CLI."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest

from stream.cli import COMMANDS
from stream.cli import main as cli_main
from stream.lag import (
    COLUMNS,
    Member,
    build_group_lag,
    consumed_topics,
    main,
    member_from_description,
    render_table,
    to_json,
)
from stream.settings import Settings


def sample() -> tuple[Member, Member]:
    a = Member("consumer-a", "client-a", "/10.0.0.1", (("t.events", 0), ("t.events", 1)))
    b = Member("consumer-b", "client-b", "/10.0.0.2", (("t.persons", 0),))
    return a, b


def test_rows_join_offsets_and_owners() -> None:
    a, b = sample()
    g = build_group_lag(
        "g",
        {("t.persons", 0): 50, ("t.events", 1): 7, ("t.events", 0): 100},
        {("t.events", 0): 90, ("t.events", 1): -1, ("t.persons", 0): 50},
        [a, b],
        state="Stable",
        notes=["something"],
    )
    rows = [(p.topic, p.partition, p.current_offset, p.log_end_offset, p.lag) for p in g.partitions]
    assert rows == [
        ("t.events", 0, 90, 100, 10),
        ("t.events", 1, None, 7, None),  # -1 from Kafka: nothing committed
        ("t.persons", 0, 50, 50, 0),
    ]
    owners = [p.member.member_id if p.member else None for p in g.partitions]
    assert owners == ["consumer-a", "consumer-a", "consumer-b"]
    assert g.total_lag == 10
    assert g.topic_totals() == {"t.events": 10, "t.persons": 0}


def test_partition_missing_from_committed_is_uncommitted_and_lag_never_negative() -> None:
    g = build_group_lag("g", {("t", 0): 5, ("t", 1): 5}, {("t", 1): 9})
    assert g.partitions[0].current_offset is None and g.partitions[0].lag is None
    assert g.partitions[1].lag == 0  # commit read after the end: clamp, never negative


def test_table_has_kafka_consumer_groups_columns_totals_and_members() -> None:
    a, b = sample()
    g = build_group_lag(
        "g",
        {("t.events", 0): 100, ("t.events", 1): 7, ("t.persons", 0): 50},
        {("t.events", 0): 90, ("t.persons", 0): 45},
        [a, b],
        state="Stable",
        notes=["topic x does not exist"],
    )
    lines = render_table([g]).splitlines()
    assert lines[0].split() == list(COLUMNS)
    assert lines[1].split() == [
        "g",
        "t.events",
        "0",
        "90",
        "100",
        "10",
        "consumer-a",
        "/10.0.0.1",
        "client-a",
    ]
    assert lines[2].split()[:6] == ["g", "t.events", "1", "-", "7", "-"]
    text = "\n".join(lines)
    assert any(line.split() == ["g", "t.events", "2", "10"] for line in lines)
    assert any(line.split() == ["g", "t.persons", "1", "5"] for line in lines)
    assert any(line.split() == ["g", "(total)", "3", "15"] for line in lines)
    assert "group g (state Stable): 2 member(s)" in text
    assert any(line.split()[:1] == ["consumer-b"] for line in lines)
    assert lines[-1] == "note: topic x does not exist"


def test_table_for_an_empty_group() -> None:
    text = render_table([build_group_lag("g", {}, {}, notes=["no topics"])])
    assert "(no partitions to show)" in text
    assert "group g: no active members" in text


def test_json_is_machine_readable() -> None:
    a, _ = sample()
    g1 = build_group_lag("g1", {("t.events", 0): 10}, {("t.events", 0): 4}, [a], state="Stable")
    g2 = build_group_lag("g2", {("x", 0): 3}, {("x", 0): 0})
    doc = json.loads(json.dumps(to_json([g1, g2])))
    assert doc["total_lag"] == 9
    first = doc["groups"][0]
    assert first["group"] == "g1" and first["state"] == "Stable" and first["total_lag"] == 6
    assert first["topics"] == [{"topic": "t.events", "partitions": 1, "lag": 6}]
    assert first["partitions"] == [
        {
            "group": "g1",
            "topic": "t.events",
            "partition": 0,
            "current_offset": 4,
            "log_end_offset": 10,
            "lag": 6,
            "consumer_id": "consumer-a",
            "host": "/10.0.0.1",
            "client_id": "client-a",
        }
    ]
    assert first["members"][0]["partitions"] == [
        {"topic": "t.events", "partition": 0},
        {"topic": "t.events", "partition": 1},
    ]


@pytest.mark.parametrize(
    "assignment",
    [
        {"assigned_partitions": [{"topic": "t", "partitions": [2, 0]}], "user_data": ""},
        SimpleNamespace(assigned_partitions=[SimpleNamespace(topic="t", partitions=[0, 2])]),
        {"assigned_partitions": [("t", [0, 2])]},
    ],
)
def test_member_assignment_in_any_decoded_shape(assignment: object) -> None:
    m = member_from_description(
        {"member_id": "m", "client_id": "c", "client_host": "/h", "member_assignment": assignment}
    )
    assert m.assignment == (("t", 0), ("t", 2))


@pytest.mark.parametrize("assignment", ["", b"", None, b"\x00\x01"])
def test_member_without_a_decodable_assignment(assignment: object) -> None:
    """Tansu sends member ids only: empty client id, host and assignment."""
    m = member_from_description(
        {
            "member_id": "faust-1",
            "client_id": "",
            "client_host": "",
            "member_assignment": assignment,
        }
    )
    assert m == Member("faust-1")
    assert m.to_json() == {
        "consumer_id": "faust-1",
        "client_id": None,
        "host": None,
        "partitions": [],
    }


def test_consumed_topics_are_the_agents_inputs() -> None:
    assert consumed_topics(Settings(topic_prefix="p")) == ["p.events", "p.resolve", "p.persons"]


def test_lag_is_a_cli_command_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert "lag" in COMMANDS
    with pytest.raises(SystemExit) as exc:
        cli_main(["lag", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for needle in ("--group", "--json", "--watch", "--topic", "examples:", "crossprofile lag"):
        assert needle in out


def test_without_a_broker_it_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CROSSPROFILE_BROKER", raising=False)
    assert main(["--json"], stream=io.StringIO()) == 2
    assert "CROSSPROFILE_BROKER" in capsys.readouterr().err


def test_watch_needs_a_positive_interval(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--bootstrap", "127.0.0.1:1", "--watch", "0"], stream=io.StringIO()) == 2
    assert "--watch" in capsys.readouterr().err
