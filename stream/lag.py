"""Consumer lag: ``crossprofile lag`` and the numbers behind ``kafka_consumergroup_lag``.

For each group / topic / partition: the committed offset (CURRENT-OFFSET), the log-end offset,
their difference (LAG) and the member that owns the partition — the columns of Kafka's own
``kafka-consumer-groups --describe`` — plus totals per topic and per group.

Where the numbers come from (all over the Kafka protocol, kafka-python's clients):

- **log-end offset**: the high watermark of a Fetch response (and never less than
  ListOffsets-"latest"), the method of :func:`stream.broker.log_end_offsets`. ListOffsets alone
  is wrong on the embedded Tansu broker (it answers the last batch's base offset + 1, see
  ``docs/broker.md``).
- **committed offset**: OffsetFetch for *explicit* partitions (an OffsetFetch for "all
  partitions of the group" is unreliable on Tansu; it is only used to *discover* topics).
- **members**: DescribeGroups. Real Kafka returns each member's client id, host and partition
  assignment; Tansu returns member ids only (no host, client id or assignment), so on Tansu the
  owner columns show ``-``.
- **which topics**: the topics named by the caller (``--topic``; for the app's own group the
  topics it consumes), the topics in the members' assignments, and the topics the group has
  committed offsets for. Each source that fails is reported as a note, not an error.

The pure part (:class:`PartitionLag`, :class:`GroupLag`, :func:`build_group_lag`,
:func:`render_table`, :func:`to_json`) does no I/O:

>>> g = build_group_lag("g", {("t", 0): 10, ("t", 1): 4}, {("t", 0): 7, ("t", 1): None})
>>> [(p.partition, p.lag) for p in g.partitions], g.total_lag
([(0, 3), (1, None)], 3)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from stream.settings import Settings

__all__ = [
    "GroupLag",
    "LagReader",
    "Member",
    "PartitionLag",
    "build_group_lag",
    "consumed_topics",
    "main",
    "member_from_description",
    "render_table",
    "to_json",
]

log = logging.getLogger(__name__)

TP = tuple[str, int]
COLUMNS = (
    "GROUP",
    "TOPIC",
    "PARTITION",
    "CURRENT-OFFSET",
    "LOG-END-OFFSET",
    "LAG",
    "CONSUMER-ID",
    "HOST",
    "CLIENT-ID",
)


# -- the pure part ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    """One member of a consumer group, as DescribeGroups reports it."""

    member_id: str
    client_id: str = ""
    host: str = ""
    assignment: tuple[TP, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "consumer_id": self.member_id,
            "client_id": self.client_id or None,
            "host": self.host or None,
            "partitions": [{"topic": t, "partition": p} for t, p in self.assignment],
        }


@dataclass(frozen=True)
class PartitionLag:
    """One row of ``kafka-consumer-groups --describe``."""

    group: str
    topic: str
    partition: int
    current_offset: int | None  # None: the group has committed nothing here
    log_end_offset: int
    member: Member | None = None

    @property
    def lag(self) -> int | None:
        """``log_end_offset - current_offset`` (never negative); None without a commit."""
        if self.current_offset is None:
            return None
        return max(0, self.log_end_offset - self.current_offset)

    def to_json(self) -> dict[str, Any]:
        m = self.member
        return {
            "group": self.group,
            "topic": self.topic,
            "partition": self.partition,
            "current_offset": self.current_offset,
            "log_end_offset": self.log_end_offset,
            "lag": self.lag,
            "consumer_id": m.member_id if m else None,
            "host": (m.host or None) if m else None,
            "client_id": (m.client_id or None) if m else None,
        }


@dataclass(frozen=True)
class GroupLag:
    """A group's lag at one moment: rows, members, and notes on what could not be read."""

    group: str
    partitions: tuple[PartitionLag, ...]
    members: tuple[Member, ...] = ()
    state: str | None = None
    notes: tuple[str, ...] = ()
    read_at: float = field(default_factory=time.time)

    @property
    def total_lag(self) -> int:
        """Sum of the known lags (partitions without a committed offset count 0)."""
        return sum(p.lag or 0 for p in self.partitions)

    def topic_totals(self) -> dict[str, int]:
        """Topic → summed lag, topics in first-seen order."""
        out: dict[str, int] = {}
        for p in self.partitions:
            out[p.topic] = out.get(p.topic, 0) + (p.lag or 0)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "state": self.state,
            "read_at": round(self.read_at, 3),
            "total_lag": self.total_lag,
            "topics": [
                {
                    "topic": topic,
                    "partitions": sum(1 for p in self.partitions if p.topic == topic),
                    "lag": lag,
                }
                for topic, lag in self.topic_totals().items()
            ],
            "partitions": [p.to_json() for p in self.partitions],
            "members": [m.to_json() for m in self.members],
            "notes": list(self.notes),
        }


def build_group_lag(
    group: str,
    log_end: Mapping[TP, int],
    committed: Mapping[TP, int | None],
    members: Sequence[Member] = (),
    *,
    state: str | None = None,
    notes: Sequence[str] = (),
    read_at: float | None = None,
) -> GroupLag:
    """Join end offsets, committed offsets and member assignments into rows.

    One row per partition in ``log_end``, sorted by topic and partition. A negative committed
    offset (Kafka's "none") is treated as no commit. The owner of a partition is the member
    whose assignment names it.

    >>> m = Member("c-1", "cli", "/10.0.0.1", (("t", 1),))
    >>> g = build_group_lag("g", {("t", 1): 9, ("t", 0): 5}, {("t", 0): 5, ("t", 1): -1}, [m])
    >>> [(p.partition, p.current_offset, p.lag, p.member and p.member.member_id)
    ...  for p in g.partitions]
    [(0, 5, 0, None), (1, None, None, 'c-1')]
    """
    owner: dict[TP, Member] = {}
    for m in members:
        for tp in m.assignment:
            owner[tp] = m
    rows = []
    for tp in sorted(log_end):
        offset = committed.get(tp)
        rows.append(
            PartitionLag(
                group=group,
                topic=tp[0],
                partition=tp[1],
                current_offset=offset if offset is not None and offset >= 0 else None,
                log_end_offset=int(log_end[tp]),
                member=owner.get(tp),
            )
        )
    return GroupLag(
        group=group,
        partitions=tuple(rows),
        members=tuple(members),
        state=state,
        notes=tuple(notes),
        read_at=time.time() if read_at is None else read_at,
    )


def _cell(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _align(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def render_table(groups: Sequence[GroupLag]) -> str:
    """The ``kafka-consumer-groups --describe`` table, then totals, members and notes.

    >>> g = build_group_lag("g", {("t", 0): 10}, {("t", 0): 4})
    >>> print(render_table([g]))  # doctest: +NORMALIZE_WHITESPACE
    GROUP  TOPIC  PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID  HOST  CLIENT-ID
    g      t      0          4               10              6    -            -     -
    <BLANKLINE>
    GROUP  TOPIC    PARTITIONS  LAG
    g      t        1           6
    g      (total)  1           6
    <BLANKLINE>
    group g: no active members
    """
    out: list[str] = []
    rows: list[list[str]] = [list(COLUMNS)]
    for g in groups:
        for p in g.partitions:
            m = p.member
            rows.append(
                [
                    g.group,
                    p.topic,
                    str(p.partition),
                    _cell(p.current_offset),
                    str(p.log_end_offset),
                    _cell(p.lag),
                    _cell(m.member_id if m else None),
                    _cell(m.host if m else None),
                    _cell(m.client_id if m else None),
                ]
            )
    if len(rows) > 1:
        out += _align(rows)
    else:
        out.append("(no partitions to show)")
    totals: list[list[str]] = [["GROUP", "TOPIC", "PARTITIONS", "LAG"]]
    for g in groups:
        for topic, lag in g.topic_totals().items():
            n = sum(1 for p in g.partitions if p.topic == topic)
            totals.append([g.group, topic, str(n), str(lag)])
        totals.append([g.group, "(total)", str(len(g.partitions)), str(g.total_lag)])
    out.append("")
    out += _align(totals)
    for g in groups:
        out.append("")
        state = f" (state {g.state})" if g.state else ""
        if not g.members:
            out.append(f"group {g.group}{state}: no active members")
        else:
            out.append(f"group {g.group}{state}: {len(g.members)} member(s)")
            mrows = [["CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS"]]
            for m in g.members:
                mrows.append(
                    [m.member_id, _cell(m.host), _cell(m.client_id), str(len(m.assignment))]
                )
            out += ["  " + line for line in _align(mrows)]
        out += [f"note: {n}" for n in g.notes]
    return "\n".join(out)


def to_json(groups: Sequence[GroupLag]) -> dict[str, Any]:
    """Machine-readable form: ``{"groups": [...], "total_lag": N}``.

    >>> to_json([build_group_lag("g", {("t", 0): 3}, {("t", 0): 1})])["total_lag"]
    2
    """
    return {
        "groups": [g.to_json() for g in groups],
        "total_lag": sum(g.total_lag for g in groups),
    }


def _assigned_partitions(raw: Any) -> tuple[TP, ...]:
    """(topic, partition) pairs from a decoded ConsumerProtocol assignment, in any shape."""
    if raw is None or isinstance(raw, str | bytes | bytearray):
        return ()  # empty, or not decodable (Tansu sends none)
    items = raw.get("assigned_partitions") if isinstance(raw, Mapping) else None
    if items is None:
        items = getattr(raw, "assigned_partitions", None) or ()
    out: list[TP] = []
    for item in items:
        if isinstance(item, Mapping):
            topic, parts = item.get("topic"), item.get("partitions")
        elif isinstance(item, tuple | list) and len(item) == 2:
            topic, parts = item
        else:
            topic, parts = getattr(item, "topic", None), getattr(item, "partitions", None)
        if topic is None or parts is None:
            continue
        out += [(str(topic), int(p)) for p in parts]
    return tuple(sorted(out))


def member_from_description(raw: Mapping[str, Any]) -> Member:
    """A :class:`Member` from one entry of kafka-python's ``describe_groups()[g]["members"]``.

    >>> member_from_description({"member_id": "m", "client_id": "c", "client_host": "/h",
    ...     "member_assignment": {"assigned_partitions": [{"topic": "t", "partitions": [1, 0]}]}})
    Member(member_id='m', client_id='c', host='/h', assignment=(('t', 0), ('t', 1)))
    >>> member_from_description({"member_id": "m", "client_id": "", "client_host": "",
    ...     "member_assignment": ""}).assignment
    ()
    """
    return Member(
        member_id=str(raw.get("member_id") or ""),
        client_id=str(raw.get("client_id") or ""),
        host=str(raw.get("client_host") or ""),
        assignment=_assigned_partitions(raw.get("member_assignment")),
    )


def consumed_topics(settings: Settings) -> list[str]:
    """The topics the app's own consumer group (``settings.app_id``) commits offsets for.

    Mirrors the agents' source topics in :func:`stream.app.create_app`.

    >>> from stream.settings import Settings
    >>> consumed_topics(Settings(topic_prefix="p"))
    ['p.events', 'p.resolve', 'p.persons']
    """
    p = settings.topic_prefix
    return [settings.events_topic, f"{p}.resolve", f"{p}.persons"]


# -- reading it from the broker (kafka-python) -----------------------------------------------
def _drop_acl_operations(obj: dict[str, Any]) -> dict[str, Any]:
    # kafka-python 3.0.12 always asks DescribeGroups for authorized operations and fails on
    # values it does not know (Tansu answers bit 15); we do not need them.
    obj.pop("authorized_operations", None)
    return obj


def admin_client(bootstrap: str, *, timeout_s: float = 10.0, client_id: str = "") -> Any:
    """A kafka-python ``KafkaAdminClient`` whose ``describe_groups`` works on Tansu too."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=[s.strip() for s in bootstrap.split(",") if s.strip()],
        client_id=client_id or "crossprofile-lag",
        request_timeout_ms=int(timeout_s * 1000),
        bootstrap_timeout_ms=int(timeout_s * 1000),
    )
    admin._process_acl_operations = _drop_acl_operations
    return admin


class LagReader:
    """Reads groups' lag from a broker; keeps one admin connection (use as a context manager).

    >>> with LagReader("127.0.0.1:9092") as reader:                  # doctest: +SKIP
    ...     print(render_table([reader.read("crossprofile", ["crossprofile.events"])]))
    """

    def __init__(self, bootstrap: str, *, timeout_s: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self._admin: Any = None
        self._consumer: Any = None

    @property
    def admin(self) -> Any:
        if self._admin is None:
            self._admin = admin_client(self.bootstrap, timeout_s=self.timeout_s)
        return self._admin

    @property
    def consumer(self) -> Any:
        """A group-less consumer, only ever used to read high watermarks."""
        if self._consumer is None:
            from kafka import KafkaConsumer

            self._consumer = KafkaConsumer(
                bootstrap_servers=[s.strip() for s in self.bootstrap.split(",") if s.strip()],
                client_id="crossprofile-lag-end-offsets",
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="latest",
                fetch_max_wait_ms=50,
                request_timeout_ms=int(self.timeout_s * 1000) + 1000,
                isolation_level="read_uncommitted",
            )
        return self._consumer

    def close(self) -> None:
        """Close the connections (the next look-up opens new ones)."""
        admin, self._admin = self._admin, None
        consumer, self._consumer = self._consumer, None
        for client in (admin, consumer):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()

    def __enter__(self) -> LagReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- look-ups -------------------------------------------------------------------------
    def list_groups(self) -> list[str]:
        """Every consumer group the broker knows, sorted."""
        return sorted({str(g["group_id"]) for g in self.admin.list_groups()})

    def describe(self, group: str) -> tuple[str | None, list[Member]]:
        """The group's state and members (DescribeGroups)."""
        desc = self.admin.describe_groups([group]).get(group) or {}
        if desc.get("error"):
            raise RuntimeError(f"DescribeGroups {group}: {desc['error']}")
        members = [member_from_description(m) for m in desc.get("members") or ()]
        return (desc.get("group_state") or None), members

    def committed_topics(self, group: str) -> set[str]:
        """Topics the group has committed offsets for (OffsetFetch for all partitions)."""
        result = self.admin.list_group_offsets({group: None}).get(group, {})
        return {tp.topic for tp, meta in result.items() if meta is not None and meta.offset >= 0}

    def partitions(self, topics: Iterable[str]) -> tuple[dict[str, list[int]], list[str]]:
        """Topic → its partition numbers, and the topics that do not exist."""
        names = sorted(set(topics))
        if not names:
            return {}, []
        found: dict[str, list[int]] = {}
        missing: list[str] = []
        for desc in self.admin.describe_topics(names):
            parts = sorted(int(p["partition_index"]) for p in desc.get("partitions") or ())
            if desc.get("error_code") or not parts:
                missing.append(str(desc["name"]))
            else:
                found[str(desc["name"])] = parts
        missing += [n for n in names if n not in found and n not in missing]
        return found, sorted(missing)

    def committed(self, group: str, tps: Sequence[TP]) -> dict[TP, int | None]:
        """Committed offsets for explicit partitions (None: nothing committed)."""
        from kafka import TopicPartition

        if not tps:
            return {}
        want = [TopicPartition(t, p) for t, p in tps]
        result = self.admin.list_group_offsets({group: want}).get(group, {})
        out: dict[TP, int | None] = {}
        for tp in want:
            meta = result.get(tp)
            offset = None if meta is None or meta.offset is None else int(meta.offset)
            out[(tp.topic, tp.partition)] = offset if offset is not None and offset >= 0 else None
        return out

    def log_end(self, tps: Sequence[TP]) -> dict[TP, int]:
        """True log-end offsets: ``max(ListOffsets-latest, Fetch high watermark)``.

        The same method as :func:`stream.broker.log_end_offsets` (which see), on one
        long-lived consumer: re-assigning the partitions clears their old watermarks, the
        fetch starts at the ListOffsets answer (so it reads at most the tail of the last
        batch on Tansu, nothing on real Kafka), and any fetch response sets the watermark.
        """
        from kafka import TopicPartition

        from .broker import BrokerError

        want = [TopicPartition(t, p) for t, p in dict.fromkeys(tps)]
        if not want:
            return {}
        consumer = self.consumer
        consumer.unsubscribe()  # forget earlier watermarks and buffered records
        consumer.assign(want)
        try:
            listed: dict[Any, int] = consumer.end_offsets(want)
            for tp in want:
                consumer.seek(tp, listed[tp])
            deadline = time.monotonic() + self.timeout_s
            while any(consumer.highwater(tp) is None for tp in want):
                if time.monotonic() >= deadline:
                    missing = [
                        f"{tp.topic}/{tp.partition}"
                        for tp in want
                        if consumer.highwater(tp) is None
                    ]
                    raise BrokerError(f"no fetch response for {missing} within {self.timeout_s}s")
                consumer.poll(timeout_ms=100)
            return {
                (tp.topic, tp.partition): max(int(listed[tp]), int(consumer.highwater(tp)))
                for tp in want
            }
        finally:
            consumer.unsubscribe()

    # -- the whole picture ----------------------------------------------------------------
    def read(
        self,
        group: str,
        topics: Iterable[str] = (),
        *,
        discover: bool = True,
        partitions: Iterable[TP] | None = None,
    ) -> GroupLag:
        """One group's lag over ``topics`` (plus, with ``discover``, the topics found in its
        members' assignments and committed offsets). ``partitions`` restricts the rows to
        those partitions (the metrics endpoint passes the worker's own assignment).

        Committed offsets are read before end offsets, so a lag is never understated.
        """
        notes: list[str] = []
        state: str | None = None
        members: list[Member] = []
        try:
            state, members = self.describe(group)
        except Exception as exc:
            notes.append(f"could not describe group {group} ({exc!r}); members unknown")
        wanted = list(dict.fromkeys(topics))
        if discover:
            wanted += [t for m in members for t, _ in m.assignment]
            try:
                wanted += sorted(self.committed_topics(group))
            except Exception as exc:
                notes.append(
                    "could not list the group's committed topics (OffsetFetch for all "
                    f"partitions failed: {exc!r}); name them with --topic"
                )
        wanted = list(dict.fromkeys(wanted))
        if not wanted:
            notes.append(
                f"no topics for group {group}: no member assignments and no committed offsets "
                "were found; name the topics with --topic"
            )
        parts, missing = self.partitions(wanted)
        notes += [f"topic {t} does not exist" for t in missing]
        tps = [(t, p) for t in wanted if t in parts for p in parts[t]]
        if partitions is not None:
            keep = set(partitions)
            tps = [tp for tp in tps if tp in keep]
        committed = self.committed(group, tps)
        ends = self.log_end(tps)
        return build_group_lag(group, ends, committed, members, state=state, notes=notes)


# -- command line -------------------------------------------------------------------------------
EPILOG = """\
The columns are those of Kafka's `kafka-consumer-groups --describe`; LAG = LOG-END-OFFSET -
CURRENT-OFFSET ('-' where the group has committed nothing yet). Log-end offsets come from a
fetch high watermark, which is exact on the embedded broker too (docs/operations.md).

examples:
  crossprofile lag                              # the app's group (CROSSPROFILE_APP_ID)
  crossprofile lag --group crossprofile --topic crossprofile.events
  crossprofile lag --all-groups
  crossprofile lag --json | jq '.total_lag'
  crossprofile lag --watch 2                    # refresh every 2 s until Ctrl-C
  crossprofile lag --watch 5 --json             # one JSON object per line, every 5 s
  CROSSPROFILE_BROKER=kafka-1:9092 crossprofile lag --bootstrap kafka-2:9092
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossprofile lag",
        description=(
            "Show consumer lag per group / topic / partition: committed offset, log-end\n"
            "offset, lag, the owning member, and totals."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--group",
        "-g",
        action="append",
        default=[],
        metavar="G",
        help="consumer group (repeatable; default: CROSSPROFILE_APP_ID)",
    )
    parser.add_argument(
        "--all-groups", action="store_true", help="every consumer group the broker knows"
    )
    parser.add_argument(
        "--topic",
        "-t",
        action="append",
        default=[],
        metavar="T",
        help="also show topic T (repeatable); for the app's group its input topics are "
        "always shown",
    )
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="broker(s) to ask (default: CROSSPROFILE_BROKER)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="refresh every SECONDS until Ctrl-C (with --json: one JSON object per line)",
    )
    parser.add_argument(
        "--count", type=int, metavar="N", help="with --watch: stop after N refreshes"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="broker request timeout (default: %(default)s)",
    )
    return parser


def _read_all(reader: LagReader, args: argparse.Namespace, settings: Settings) -> list[GroupLag]:
    groups: list[str] = list(dict.fromkeys(args.group))
    if args.all_groups:
        groups += [g for g in reader.list_groups() if g not in groups]
    elif not groups:
        groups = [settings.app_id]
    out = []
    for group in groups:
        topics = list(args.topic)
        if group == settings.app_id:
            topics = consumed_topics(settings) + topics
        out.append(reader.read(group, topics))
    return out


def _emit(groups: list[GroupLag], as_json: bool, stream: TextIO) -> None:
    if as_json:
        stream.write(json.dumps(to_json(groups)) + "\n")
    else:
        stream.write(render_table(groups) + "\n")
    stream.flush()


def _watch(
    reader: LagReader, args: argparse.Namespace, settings: Settings
) -> Iterator[list[GroupLag] | Exception]:
    """Readings every ``--watch`` seconds; a failed reading is yielded, not raised."""
    n = 0
    while args.count is None or n < args.count:
        if n:
            time.sleep(args.watch)
        n += 1
        try:
            yield _read_all(reader, args, settings)
        except Exception as exc:
            reader.close()  # reconnect next time
            yield exc


def _run(args: argparse.Namespace, settings: Settings, bootstrap: str, out: TextIO) -> int:
    with LagReader(bootstrap, timeout_s=args.timeout) as reader:
        if args.watch is None:
            _emit(_read_all(reader, args, settings), args.json, out)
            return 0
        if args.json or not out.isatty():
            for reading in _watch(reader, args, settings):
                if isinstance(reading, Exception):
                    print(f"crossprofile lag: error: {reading} (retrying)", file=sys.stderr)
                    continue
                _emit(reading, args.json, out)
                if not args.json:
                    out.write("\n")
            return 0
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        with Live(Text("reading lag…"), console=Console(file=out), auto_refresh=False) as view:
            for reading in _watch(reader, args, settings):
                stamp = dt.datetime.now().strftime("%H:%M:%S")
                header = (
                    f"crossprofile lag — {bootstrap} — every {args.watch:g}s, "
                    f"last {stamp} (Ctrl-C to stop)\n\n"
                )
                body = (
                    f"error: {reading} (retrying)"
                    if isinstance(reading, Exception)
                    else render_table(reading)
                )
                view.update(Text(header + body), refresh=True)
    return 0


def main(argv: Sequence[str] | None = None, *, stream: TextIO | None = None) -> int:
    """``crossprofile lag``: 0 on success, 2 on usage errors; broker errors raise."""
    from .settings import Settings

    args = build_parser().parse_args(argv)
    settings = Settings()
    bootstrap = args.bootstrap or settings.broker
    if not bootstrap:
        print(
            "crossprofile lag: no broker: set CROSSPROFILE_BROKER=host:port or pass --bootstrap "
            "(the embedded broker prints its address when started with `crossprofile broker`)",
            file=sys.stderr,
        )
        return 2
    if args.watch is not None and args.watch <= 0:
        print("crossprofile lag: --watch needs a positive number of seconds", file=sys.stderr)
        return 2
    # kafka-python logs connection retries and cancelled look-ups at ERROR; we report failures.
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        return _run(args, settings, bootstrap, stream or sys.stdout)
    except KeyboardInterrupt:
        return 0
    finally:
        kafka_log.setLevel(level)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
