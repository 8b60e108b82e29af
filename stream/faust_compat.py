"""Make Faust correct on the embedded Tansu broker without changing anything on real Kafka.

Root cause of short table recovery on Tansu (measured, see ``docs/broker.md``)
-----------------------------------------------------------------------------
Faust decides when a table has been rebuilt from its changelog by comparing the offsets it
has read with the partition's *end offset*, which it asks for once per rebalance through
``AIOKafkaConsumerThread._highwaters`` -> ``AIOKafkaConsumer.end_offsets`` -> a ListOffsets
request with timestamp ``LATEST``. Tansu 0.6.0 answers ListOffsets-latest with *the base offset
of the last record batch + 1* instead of the log-end offset, so whenever the producer put more
than one record in the last batch of a changelog partition Faust believes the partition is
shorter than it is. ``Recovery._slurp_changelogs`` then signals "recovery done" as soon as it has
applied the record at that (wrong) offset, pauses the changelog partitions and drops the
records that were already fetched behind it: the last ``n - 1`` records of the last batch never
reach the table (one short increment per lost record in our counter test).

The high watermark that the broker puts into every *Fetch* response is right on Tansu (and is,
by definition, the log-end offset for ``read_uncommitted`` consumers on real Kafka), so the fix
is: after the normal ListOffsets call, fetch each partition once from the offset ListOffsets
returned (the tail of the last batch on Tansu, nothing at all on real Kafka) with a short-lived,
group-less consumer and take ``max(list_offsets, fetch_high_watermark)``. On real Kafka both
numbers are equal, so the override changes nothing there apart from one extra small fetch per
rebalance.

Use::

    app = faust.App(settings.app_id, **faust_app_options(settings, bootstrap=bootstrap))
    faust_compat.apply(app)          # before the worker starts

:func:`fetch_high_watermarks` is also usable on its own (it serves ``crossprofile lag``'s async
callers and the tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

import aiokafka
import numpy as np
import orjson
from aiokafka.structs import TopicPartition
from faust.serializers import codecs as faust_codecs
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.utils import json as faust_json

from stream import offset_gaps

if TYPE_CHECKING:
    import faust

    from stream.settings import Settings

__all__ = [
    "TrueEndConsumer",
    "TrueEndConsumerThread",
    "apply",
    "consumer_counters",
    "faust_app_options",
    "fetch_high_watermarks",
    "fetch_range",
    "is_applied",
]

log = logging.getLogger(__name__)

_TPKey = TypeVar("_TPKey", bound=tuple[str, int])

#: How long one probe fetch may wait on a partition that has no new data (real Kafka holds
#: a fetch at the log end for up to ``fetch_max_wait_ms`` before answering with the watermark).
PROBE_FETCH_MAX_WAIT_MS = 50

#: The profile table's value codec: plain pickle bytes. Faust's own "pickle" codec adds base64
#: (+33 % on every changelog record and in memory for no gain: Kafka values are bytes).
PROFILE_CODEC = "raw_pickle"
if PROFILE_CODEC not in faust_codecs.codecs:
    faust_codecs.register(PROFILE_CODEC, faust_codecs.raw_pickle())


def _json_default(obj: Any) -> Any:
    """What orjson cannot write itself: numpy scalars as Python numbers, then Faust's own
    fallbacks (Decimal, UUID, dates, sets, ``__json__``)."""
    if isinstance(obj, np.generic):
        return obj.item()
    return faust_json.on_default(obj)


class OrjsonCodec(faust_codecs.Codec):
    """JSON through :pypi:`orjson`: the same documents as the stdlib ``json`` codec, 5–10×
    faster to write and ~2.5× to read (py-spy put JSON at ~5 % of a worker's event loop).
    Unlike Faust's own orjson path, numpy numbers and arrays are written as JSON numbers and
    lists (as stdlib ``json`` writes ``numpy.float64``) instead of failing the send."""

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)

    def _dumps(self, s: Any) -> bytes:
        return json_bytes(s)


def json_bytes(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, as :class:`OrjsonCodec` writes it to a topic."""
    return orjson.dumps(
        value,
        default=_json_default,
        option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
    )


#: The value codec of every JSON topic the app writes or reads.
JSON_CODEC = "crossprofile_json"
if JSON_CODEC not in faust_codecs.codecs:
    faust_codecs.register(JSON_CODEC, OrjsonCodec())


async def fetch_high_watermarks(
    bootstrap_servers: str | list[str],
    start_offsets: Mapping[_TPKey, int | None],
    *,
    timeout_s: float = 10.0,
    **client_kwargs: Any,
) -> dict[_TPKey, int]:
    """Return each partition's high watermark as reported by a Fetch response.

    ``start_offsets`` maps partitions (any ``(topic, partition)`` named tuple: Faust ``TP``,
    aiokafka or kafka-python ``TopicPartition``) to the offset to fetch from; ``None`` means
    "ask ListOffsets-latest first". Fetching from the (possibly too low) ListOffsets answer reads
    at most the tail of the last batch; on real Kafka it reads nothing and just returns the
    watermark. Partitions whose watermark did not arrive within ``timeout_s`` are left out of
    the result (callers fall back to ListOffsets). ``client_kwargs`` are passed to
    :class:`aiokafka.AIOKafkaConsumer` (security settings, client id, ...).
    """
    if not start_offsets:
        return {}
    keys = {TopicPartition(tp[0], tp[1]): tp for tp in start_offsets}
    tps = list(keys)
    async with _groupless_consumer(bootstrap_servers, "latest", **client_kwargs) as consumer:
        consumer.assign(tps)
        missing = [tp for tp in tps if start_offsets[keys[tp]] is None]
        listed: dict[TopicPartition, int] = {}
        if missing:
            listed = cast(dict[TopicPartition, int], await consumer.end_offsets(missing))
        for tp in tps:
            start = start_offsets[keys[tp]]
            consumer.seek(tp, listed[tp] if start is None else start)
        deadline = time.monotonic() + timeout_s
        result: dict[_TPKey, int] = {}
        while True:
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is not None:
                    result[keys[tp]] = int(hw)
            pending = [tp for tp in tps if keys[tp] not in result]
            if not pending or time.monotonic() >= deadline:
                break
            # Any fetch response (with or without records) sets the partition's highwater.
            await consumer.getmany(*pending, timeout_ms=PROBE_FETCH_MAX_WAIT_MS * 2)
        return result


@contextlib.asynccontextmanager
async def _groupless_consumer(
    bootstrap_servers: str | list[str], reset: str, **client_kwargs: Any
) -> AsyncIterator[aiokafka.AIOKafkaConsumer]:
    """A started, short-lived aiokafka consumer outside any group (no commits), stopped on exit;
    it waits at most ``PROBE_FETCH_MAX_WAIT_MS`` on a partition with no new data."""
    consumer = aiokafka.AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset=reset,
        fetch_max_wait_ms=PROBE_FETCH_MAX_WAIT_MS,
        isolation_level="read_uncommitted",
        **client_kwargs,
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


class TrueEndConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread whose ``highwaters`` are the true log-end offsets.

    :meth:`_highwaters` is what Faust's ``Recovery`` uses (``_build_highwaters``) to decide
    where an active or standby changelog partition ends. :meth:`_create_worker_consumer` only
    lowers the fetch wait, which Faust hard-codes to 1,500 ms: Tansu holds a fetch that finds no
    data for that long, and data arriving meanwhile waits with it, once per internal hop.
    """

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "_fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = int(wait_ms)  # read when the consumer starts
        return consumer

    async def _highwaters(self, partitions: list[faust.types.TP]) -> Mapping[Any, int]:
        listed = await super()._highwaters(partitions)
        if self.consumer.in_transaction or not listed:
            return listed  # read_committed ends at the last stable offset: not our case
        try:
            probed = await fetch_high_watermarks(
                _servers(self.transport),
                {tp: listed[tp] for tp in partitions if listed.get(tp) is not None},
                timeout_s=min(float(self.app.conf.broker_request_timeout), 30.0),
                **_client_kwargs(self.app, "end-probe"),
            )
        except Exception as exc:  # never make recovery fail because of the probe
            log.warning("Fetch high-watermark probe failed (%r); using ListOffsets", exc)
            return listed
        out = dict(listed)
        for tp, hw in probed.items():
            before = out.get(tp)
            if before is None or hw > before:
                if before is not None:
                    log.info(
                        "End offset of %s: ListOffsets said %d, fetch high watermark %d; using %d",
                        tp,
                        before,
                        hw,
                        hw,
                    )
                out[tp] = hw
        return out


class TrueEndConsumer(faust_aiokafka.Consumer):
    """Faust aiokafka consumer that runs :class:`TrueEndConsumerThread` and never commits past
    a hole in a partition's acknowledged offsets (:mod:`stream.offset_gaps`): it reads the hole
    again instead, out of band, and hands those records to the agents (:meth:`_refill`)."""

    _thread: TrueEndConsumerThread
    #: seconds a hole may last before it is read again
    heal_after_s: float = offset_gaps.HEAL_AFTER_S
    #: how long one refill may take to read its hole before it gives up (and tries again later)
    refill_timeout_s: float = 10.0
    #: the most offsets one refill reads (a longer hole is filled over several rounds)
    refill_max_offsets: int = 5000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holes: dict[Any, offset_gaps.Hole] = {}
        self._refills: dict[Any, asyncio.Future[None]] = {}
        self._log_start: dict[Any, int] = {}
        self._log_start_asked: dict[Any, asyncio.Future[None]] = {}
        #: holes read again (``/stats`` and ``crossprofile_offset_holes_refetched_total``)
        self.holes_refetched = 0
        #: records a refill handed to the agents
        self.records_refilled = 0
        #: acks not recorded: a message fetched before a rebalance, or acked while flow control
        #: was suspended (see :meth:`ack`)
        self.stale_acks_ignored = 0

    def _new_consumer_thread(self) -> TrueEndConsumerThread:
        return TrueEndConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def ack(self, message: Any) -> bool:
        """Faust's ack, except where the ack may stand for a message that was never processed.

        Faust's streams *ack* a message they skip, which they do to a message fetched under an
        older consumer generation and to any message taken while flow control is suspended (a
        rebalance under way). Faust counts on the seek back to the committed offset to deliver
        it again; when that seek had already happened, or the fetch loop then drops the record
        again, the skipped offset was committed and the event never processed. Such an ack is
        not recorded here: the offset stays a hole, which the rebalance's seek fills, or else
        :meth:`_refill`. A message that *was* processed is then delivered again too, and the
        per-event dedup absorbs it.
        """
        generation = getattr(message, "generation_id", None)
        stale = generation is not None and generation != self.app.consumer_generation_id
        if stale or not self.app.flow_control.is_active():
            if not message.acked:
                message.acked = True
                self._unacked_messages.discard(message)
                self.stale_acks_ignored += 1
            return False
        acked: bool = super().ack(message)
        return acked

    async def commit_and_end_transactions(self) -> None:
        """Faust's last commit when the consumer stops, made to commit.

        Faust's ``commit()`` does nothing when another commit is in flight: it waits for that
        one and returns. At stop, that one may have taken its offsets before the last events
        were acked, which then stay uncommitted, and a restarted worker processes them again
        (a graceful restart of the table-recovery test's app counted the last ~200 of 400
        events twice, once in a few dozen runs). Here the commit in flight ends first, then
        this one commits every offset acked by now. (The worker's per-event dedup already
        absorbed such a replay in the profiles; the replay itself is what this saves.)
        """
        await self.maybe_wait_for_commit_to_finish()
        await self.commit(start_new_transaction=False)

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        """Never take a jump of the read offset for a gap in the log.

        Faust's fetch loop marks every offset between its read offset and the next record it
        yields as a gap, and a gap counts as acknowledged. After a rebalance the read offset is
        set back in the middle of a batch, so records that were skipped and never processed
        were marked so, and committed. Offsets that the log really lacks are found by
        :meth:`_refill`, which reads them and records a gap only for what the broker skips.
        """

    def _new_offset(self, tp: Any) -> int | None:
        holes = self._holes
        acked = self._acked.get(tp) or ()
        committed = self._committed_offset.get(tp)
        if committed is None and acked:
            # No commit yet (Faust also says None for a commit at 0): the partition was read
            # from its log start, so a hole is measured from there. Faust's own rule would
            # commit the first run of acks whatever lies before it.
            committed = self._log_start.get(tp)
            if committed is None:
                self._ask_log_start(tp)
                return None  # hold the first commit until the log start is known
        hole = offset_gaps.head_hole(committed, acked)
        covered = in_flight = False
        if hole is not None:
            start, end = hole
            gaps = self._gap[tp]
            covered = all(gaps.overlaps_point(o) for o in range(start, min(end, start + 1000)))
            in_flight = any(
                m.tp == tp and start <= m.offset < end and not m.acked
                for m in list(self._unacked_messages)
            ) or (tp in self._refills and not self._refills[tp].done())
        decision, remembered = offset_gaps.decide(
            hole,
            holes.get(tp),
            in_flight=in_flight,
            covered_by_gap=covered,
            now=time.monotonic(),
            heal_after_s=self.heal_after_s,
        )
        if remembered is None:
            holes.pop(tp, None)
        else:
            holes[tp] = remembered
        if decision == "commit":
            offset: int | None = super()._new_offset(tp)
            return offset
        assert hole is not None
        if decision == "refill":
            self.holes_refetched += 1
            log.warning(
                "offsets %d..%d of %s:%d were dropped without an ack (a rebalance); "
                "reading them again and handing them to the agents (refill %d)",
                hole[0],
                hole[1] - 1,
                tp.topic,
                tp.partition,
                remembered.refills if remembered is not None else 0,
            )
            self._refills[tp] = asyncio.ensure_future(self._refill(tp, hole[0], hole[1]))
        return None

    def _ask_log_start(self, tp: Any) -> None:
        asked = self._log_start_asked.get(tp)
        if asked is None or asked.done():
            self._log_start_asked[tp] = asyncio.ensure_future(self._read_log_start(tp))

    async def _read_log_start(self, tp: Any) -> None:
        try:
            offsets = await self._thread.earliest_offsets(tp)
        except Exception as exc:  # the next commit asks again
            log.warning("log start of %s:%d unknown (%r)", tp.topic, tp.partition, exc)
            return
        for offset in offsets.values():
            self._log_start[tp] = int(offset)

    async def _refill(self, tp: Any, start: int, end: int) -> None:
        """Read offsets ``start`` to ``end - 1`` of ``tp`` and deliver the unacked ones.

        A group-less consumer of its own does the reading, so neither the group consumer's
        fetch position nor Faust's read offset moves: a seek there races the batches already
        fetched (session 6: 3 of 4 CI runs lost a sought-back hole's records). The
        records go through Faust's own message callback, so the agents see them as any other
        message of the current generation. Offsets the broker skips over inside the hole are
        absent from the log, and recorded as a gap. Nothing is delivered if the partition was
        reassigned meanwhile: its next owner reads from the committed offset, the hole's start.
        """
        generation = self.app.consumer_generation_id
        try:
            end = min(end, start + self.refill_max_offsets)  # the rest on a later round
            records, complete = await fetch_range(
                _servers(self.transport),
                TopicPartition(tp.topic, tp.partition),
                start,
                end,
                timeout_s=self.refill_timeout_s,
                **_client_kwargs(self.app, "refill"),
            )
        except Exception as exc:  # the next commit tries again
            log.warning("refill of %s:%d failed (%r); will retry", tp.topic, tp.partition, exc)
            return
        if generation != self.app.consumer_generation_id or tp not in self.assignment():
            return
        present = {record.offset for record in records}
        if complete:
            for offset in range(start, end):
                if offset not in present:
                    log.warning(
                        "offset %d of %s:%d is not in the log (transaction marker or "
                        "compaction); committing past it",
                        offset,
                        tp.topic,
                        tp.partition,
                    )
                    self._gap[tp].addi(offset, offset + 1)
        acked = self._acked_index.get(tp) or ()
        for record in records:
            if record.offset in acked:
                continue
            try:
                await self.callback(self._to_message(tp, record))
            except Exception as exc:  # e.g. stopping: the hole stays, a later round reads it
                log.warning(
                    "refill of %s:%d stopped at %d (%r)", tp.topic, tp.partition, record.offset, exc
                )
                return
            self.records_refilled += 1

    async def on_stop(self) -> None:
        """Cancel refills and log-start reads still under way, then stop as Faust does."""
        for task in [*self._refills.values(), *self._log_start_asked.values()]:
            task.cancel()
        await super().on_stop()


def _servers(transport: Any) -> list[str]:
    """The ``host:port`` list of a Faust aiokafka transport."""
    default_port = int(getattr(transport, "default_port", 9092))
    servers: list[str] = faust_aiokafka.server_list(transport.url, default_port)
    return servers


def _client_kwargs(app: Any, purpose: str) -> dict[str, Any]:
    """An extra aiokafka client's settings: the app's client id (+ ``purpose``), timeouts and
    credentials."""
    conf = app.conf
    return {
        "client_id": f"{conf.broker_client_id}-{purpose}",
        "request_timeout_ms": int(conf.broker_request_timeout * 1000.0),
        **faust_aiokafka.credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
    }


async def fetch_range(
    bootstrap_servers: str | list[str],
    tp: TopicPartition,
    start: int,
    end: int,
    *,
    timeout_s: float = 10.0,
    **client_kwargs: Any,
) -> tuple[list[Any], bool]:
    """Records of ``tp`` with ``start <= offset < end``, and whether the read got past ``end - 1``.

    A short-lived, group-less consumer reads from ``start`` until it sees an offset at or past
    ``end - 1`` or ``timeout_s`` runs out (then the second value is False and the list may be
    short). ``client_kwargs`` go to :class:`aiokafka.AIOKafkaConsumer`.
    """
    async with _groupless_consumer(bootstrap_servers, "earliest", **client_kwargs) as consumer:
        consumer.assign([tp])
        consumer.seek(tp, start)
        deadline = time.monotonic() + timeout_s
        found: list[Any] = []
        while time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=200, max_records=max(end - start, 1))
            for record in batch.get(tp, ()):
                if start <= record.offset < end:
                    found.append(record)
                if record.offset >= end - 1:
                    return found, True
            if await consumer.position(tp) >= end:
                return found, True
        return found, False


def consumer_counters(app: faust.App) -> dict[str, int]:
    """:class:`TrueEndConsumer`'s counters (zeros before the consumer exists, or for another)."""
    consumer = getattr(app, "_consumer", None)
    return {
        "offset_holes_refetched": int(getattr(consumer, "holes_refetched", 0)),
        "offset_records_refilled": int(getattr(consumer, "records_refilled", 0)),
        "stale_acks_ignored": int(getattr(consumer, "stale_acks_ignored", 0)),
    }


def is_applied(app: faust.App) -> bool:
    """True when :func:`apply` has been called on ``app``."""
    transport = app.transport
    return issubclass(transport.Consumer, TrueEndConsumer)


def apply(app: faust.App, *, fetch_max_wait_ms: int | None = None) -> None:
    """Make ``app``'s table recovery use the true log-end offsets; call before the worker starts.

    Per app (no global monkey-patching): the app's transport gets :class:`TrueEndConsumer` as
    its consumer class. Idempotent. Raises :class:`RuntimeError` if the consumer exists already
    and :class:`ValueError` for a transport other than Faust's aiokafka one (``kafka://``).
    """
    transport = app.transport
    if not isinstance(transport, faust_aiokafka.Transport):
        raise ValueError(
            f"faust_compat.apply needs the aiokafka transport (kafka://), got {type(transport)!r}"
        )
    if is_applied(app):
        return
    if getattr(app, "_consumer", None) is not None:
        raise RuntimeError("faust_compat.apply(app) must run before the app's consumer exists")
    app._fetch_max_wait_ms = fetch_max_wait_ms  # type: ignore[attr-defined]
    # Instance attribute shadows the class attribute that Transport.create_consumer reads.
    transport.Consumer = TrueEndConsumer  # type: ignore[misc]


def faust_app_options(settings: Settings, *, bootstrap: str | None = None) -> dict[str, Any]:
    """Faust ``App`` keyword arguments that work on Tansu and on real Kafka.

    ``bootstrap`` is the ``host:port`` list the app should use (what
    :func:`stream.broker.kafka_for` yields); it defaults to ``settings.broker``.

    - short session timeout (Tansu holds a JoinGroup for half of it), heartbeat at 1/5 of it;
    - ``at_least_once`` (Tansu has no idempotent/transactional producer, so no exactly_once),
      ``acks=-1``;
    - offsets committed every second (fewer re-deliveries after a crash);
    - ``earliest`` reset: a new group reads its input from the start. (``latest`` would rely on
      ListOffsets-latest, which is wrong on Tansu.)
    - JSON values (tables, topics without their own serializer) through :class:`OrjsonCodec`.
    """
    servers = bootstrap or settings.broker
    session = float(settings.session_timeout_s)
    opts: dict[str, Any] = {
        "broker_session_timeout": session,
        "broker_heartbeat_interval": max(0.5, session / 5.0),
        "broker_request_timeout": max(30.0, session * 3.0),
        "broker_commit_interval": 1.0,
        "processing_guarantee": "at_least_once",
        "producer_acks": -1,
        "consumer_auto_offset_reset": "earliest",
        "topic_partitions": settings.partitions,
        "recovery_consistency_check": True,
        "value_serializer": JSON_CODEC,
    }
    if servers:
        opts["broker"] = ";".join(
            s if "://" in s else f"kafka://{s}" for s in _split_servers(servers)
        )
    return opts


def _split_servers(servers: str | Iterable[str]) -> list[str]:
    items = [servers] if isinstance(servers, str) else list(servers)
    return [p.strip() for item in items for p in item.replace(";", ",").split(",") if p.strip()]
