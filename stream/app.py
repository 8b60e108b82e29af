"""Faust wiring: thin agents around the pure logic.

Topology (``<p>`` is the topic prefix)::

    <p>.events ──ingest──► <p>.resolve (1 partition) ──identity──► <p>.persons (keyed by person)
        │                                                            │
        └─► <p>.dlq (reason + original bytes)                   └─profile──► <p>.recommendations
                                                                                ► <p>.profiles
    <p>.items ──(every worker reads all partitions)──► local ItemIndex

- ``ingest`` validates and cleans in parallel over the input partitions; rejects go to the DLQ.
- ``identity`` runs on a single-partition topic so the identity graph sees every account; it is
  a few dict look-ups per event. It emits person-keyed commands: event, merge_out, merge_in, erase.
  The worker holding that partition resolves the events it ingests itself (no resolve hop), and
  a command for a person whose partition it holds goes straight into its own profile batches
  (no persons hop; :mod:`stream.inline` keeps the topic's order with a barrier per partition).
- ``profile`` takes events in batches (bounded size and wait), embeds all their texts in one
  encoder call off the event loop, learns each into the person's profile (a Faust table, changelog
  backed; a repeated event id is a no-op), and publishes recommendations at most once per
  refresh interval per person. It is pipelined: batch N+1 is encoded (on the encoder's own
  thread) while batch N is learned and published on the event loop, so the encoder is not idle
  while the loop works; a batch's offsets are acked only once it is applied.
- The item index is replicated: every worker reads the whole items topic with its own
  group-less consumer and encodes each item once (the encoder cache makes repeats free).

Correctness under at-least-once delivery comes from idempotent state updates, not transactions:
the dedup ring lives inside each profile and is written in the same changelog record. Events of
a batch overtaken by a rebalance whose partitions moved to another worker are neither applied nor
acked here: their new owner replays them from the last commit.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import logging
import pickle
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.types import TP

from . import faust_compat
from .batching import take_when_idle
from .encoder import Encoder
from .identity import IdentityGraph
from .ingest import Rejection, parse_event
from .inline import InlineRouter, Step
from .models import Event, Item
from .ops import LatestRecommendations
from .pipeline import (
    Due,
    embedding_field,
    embedding_from_field,
    item_key,
    new_profile,
    observation,
    recommendation_message,
    recommendation_messages,
    text_key,
)
from .profile import InterestProfile
from .recommend import ItemIndex, Signals, covisit_observations, covisit_record
from .settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Counters:
    """In-process counters (exported by the metrics endpoint)."""

    events_in: int = 0
    events_rejected: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    recommendations_out: int = 0
    merges: int = 0
    erased: int = 0
    encoder_batches: int = 0
    encoder_texts: int = 0
    encoder_seconds: float = 0.0
    covisits_applied: int = 0
    item_vectors_shared: int = 0  # items indexed with a vector read on the items topic
    identity_inline: int = 0  # events whose person ingest resolved itself (no resolve hop)
    profile_inline: int = 0  # events learned without the persons topic's hop (stream.inline)
    #: inline commands a rebalance overtook, sent on through the persons topic after all
    inline_sent_on: int = 0
    left_to_redelivery: int = 0  # events of batches overtaken by a rebalance (not acked)


def _set_event() -> asyncio.Event:
    """An :class:`asyncio.Event` that starts set."""
    event = asyncio.Event()
    event.set()
    return event


@dataclass
class Runtime:
    settings: Settings
    encoder: Encoder
    index: ItemIndex
    signals: Signals = field(default_factory=Signals)
    counters: Counters = field(default_factory=Counters)
    #: co-visit records whose item is not in this worker's index yet (the items replica lags)
    unplaced_covisits: list[dict[str, Any]] = field(default_factory=list)
    last_refresh: dict[str, float] = field(default_factory=dict)
    pending: dict[str, tuple[Event, list[str]]] = field(default_factory=dict)
    metrics: Any = None  # stream.metrics.WorkerMetrics, set by install_metrics (web views)
    latest_recs: LatestRecommendations = field(default_factory=LatestRecommendations)
    #: one thread runs every encoder call, in submission order: calls never compete for the
    #: cores the session's intra-op threads are sized for, and "encoder seconds" means busy time
    encoder_thread: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="encoder"
        )
    )

    #: encoder calls submitted and not yet finished, and an event set whenever there are none
    #: (the inline dispatcher forms its next batch only then; see :mod:`stream.batching`)
    encoder_calls_open: int = 0
    encoder_idle: asyncio.Event = field(default_factory=_set_event)

    async def embed(self, keys: Sequence[str], texts: Sequence[str]) -> Any:
        loop = asyncio.get_running_loop()
        self.encoder_calls_open += 1
        self.encoder_idle.clear()
        try:
            vectors, elapsed = await loop.run_in_executor(
                self.encoder_thread, self._encode_timed, list(keys), list(texts)
            )
        finally:
            self.encoder_calls_open -= 1
            if self.encoder_calls_open == 0:
                self.encoder_idle.set()
        self.counters.encoder_batches += 1
        self.counters.encoder_texts += len(texts)
        self.counters.encoder_seconds += elapsed
        if self.metrics is not None:
            self.metrics.observe_encoder(len(texts), elapsed)
        return vectors

    def _encode_timed(self, keys: list[str], texts: list[str]) -> tuple[Any, float]:
        t0 = time.perf_counter()
        vectors = self.encoder.encode_cached(keys, texts)
        return vectors, time.perf_counter() - t0


class ProfileTable(faust.Table):  # type: ignore[type-arg,misc]
    """Person id (raw UTF-8 key) → pickled :class:`InterestProfile`.

    Faust derives a table's codecs from its key/value types (JSON by default); these are set
    here, before the changelog topic is made. Raw keys hash like the persons topic's raw keys, so
    a person's changelog record lands on the partition of that person's events.
    """

    def __init__(self, app: faust.App, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.key_serializer = "raw"
        self.value_serializer = faust_compat.PROFILE_CODEC


@dataclass
class _Batch:
    """One batch of the profile agent between its two stages (see ``create_app``)."""

    events: Sequence[Any]  # faust Events, their acks held until the batch is applied
    commands: list[dict[str, Any]]
    parsed: list[Event | None]
    slot: dict[int, int]  # command index -> row of its vector
    vectors: asyncio.Future[Any] | None  # the batch's encoder call, running
    generation: int  # the app's rebalance count when the batch was taken
    #: commands routed here without the persons topic (:mod:`stream.inline`); ``events`` are
    #: then the ingest or resolve events they came from
    inline: bool = False


@dataclass
class _Inline:
    """A profile command routed without the persons topic, and the event it came from."""

    source: Any  # the faust Event (events or resolve topic), one reference held for this
    command: dict[str, Any]
    generation: int


def batch_is_stale(app: Any, generation: int) -> bool:
    """True once a rebalance has begun since a batch was taken (see ``_apply_batches``)."""
    return bool(app.rebalancing) or int(app.rebalancing_count) != generation


async def assignment_after_rebalance(app: Any, poll_s: float = 0.05) -> set[Any]:
    """This worker's partitions once the rebalance in progress (if any) is over."""
    while app.rebalancing:
        await asyncio.sleep(poll_s)
    return set(app.consumer.assignment())


async def ownership(app: Any, generation: int, owned: set[Any] | None) -> set[Any] | None:
    """None while no rebalance has overtaken a batch taken at ``generation``; after one, this
    worker's partitions once it is over (``owned``, when already known)."""
    if owned is None and batch_is_stale(app, generation):
        return await assignment_after_rebalance(app)
    return owned


def _now_ms() -> int:
    return int(time.time() * 1000)


def dlq_record(reason: str, detail: str, message: Any, payload: bytes) -> dict[str, Any]:
    return {
        "reason": reason,
        "detail": detail,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "received_at": _now_ms(),
        "payload": base64.b64encode(payload).decode("ascii"),
    }


def faust_options(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """Faust app settings: the broker-compatibility ones plus this app's own."""
    return {
        **faust_compat.faust_app_options(settings, bootstrap=bootstrap),
        "store": "memory://",
        "datadir": f"{settings.data_dir}/faust/{{conf.name}}",  # not <app_id>-data in the cwd
        "topic_replication_factor": 1,
        "web_port": settings.web_port,
        "web_bind": settings.web_bind,
        "web_enabled": settings.web_port != 0,
        "stream_wait_empty": False,
        "producer_linger": settings.producer_linger_ms / 1000.0,
        "logging_config": None,
    }


def create_app(settings: Settings, bootstrap: str, encoder: Encoder | None = None) -> faust.App:
    # Pickle is read only from topics this app writes (the profile changelog, persons): the
    # trust boundary is the broker's ACLs on <prefix>.persons and <app_id>-*-changelog.
    warnings.filterwarnings("ignore", message="The pickle codec calls pickle.loads")
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    # The encoder thread and the event loop share the GIL: at Python's default 5 ms switch
    # interval the encoder waited for the loop after every onnxruntime call.
    sys.setswitchinterval(settings.gil_switch_ms / 1000.0)
    app = faust.App(settings.app_id, **faust_options(settings, bootstrap))
    faust_compat.apply(app, fetch_max_wait_ms=settings.fetch_max_wait_ms)
    enc = encoder or Encoder.from_settings(settings)
    rt = Runtime(
        settings=settings,
        encoder=enc,
        index=ItemIndex(enc.dim, ann_min_items=settings.index_ann_min_items),
        signals=Signals(**settings.signals_config()),
    )
    app.runtime = rt  # type: ignore[attr-defined]
    p = settings.topic_prefix
    json_codec = faust_compat.JSON_CODEC  # orjson; numpy numbers written as numbers

    events_topic = app.topic(settings.events_topic, value_serializer="raw", key_serializer="raw")
    dlq_topic = app.topic(settings.dlq_topic, value_serializer=json_codec, key_serializer="raw")
    resolve_topic = app.topic(
        f"{p}.resolve",
        value_serializer=json_codec,
        key_serializer="raw",
        partitions=1,
        internal=True,
    )
    persons_topic = app.topic(
        f"{p}.persons",
        value_serializer=json_codec,
        key_serializer="raw",
        internal=True,
        partitions=settings.partitions,
    )
    recs_topic = app.topic(
        settings.recommendations_topic, value_serializer=json_codec, key_serializer="raw"
    )
    profiles_topic = app.topic(
        settings.profiles_topic, value_serializer=json_codec, key_serializer="raw"
    )
    items_topic = app.topic(settings.items_topic, value_serializer=json_codec, key_serializer="raw")
    covisits_topic = app.topic(
        settings.covisits_topic, value_serializer=json_codec, key_serializer="raw"
    )

    identity_table = cast(
        MutableMapping[str, Any],
        # keyed, not co-partitioned with a source topic: written from the identity agent (the
        # resolve topic) and from ingest (the events topic) when resolved inline
        app.Table("identity", default=None, partitions=1, key_type=str, use_partitioner=True),
    )
    profiles_table = app.tables.add(
        ProfileTable(
            app,
            name="profiles",
            default=None,
            partitions=settings.partitions,
            key_type=str,
            use_partitioner=True,
            beacon=app.tables.beacon,
        )
    )
    profiles = cast(MutableMapping[str, InterestProfile | None], profiles_table)

    async def ack_after(stream: Any, handle: Callable[[Any], Awaitable[None]]) -> None:
        """Handle each event, then ack it: an event is acked only once its output is sent.

        Faust's automatic ack runs in the stream's ``finally``, so an agent cancelled mid-event
        (a worker stopping) could ack an event it had not finished, and the final commit cover
        it (docs/broker.md gap 11).
        """
        manual = stream.noack()
        async for event in manual.events():
            await handle(event)
            await manual.ack(event)

    @app.agent(events_topic)
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        await ack_after(stream, _ingest_one)

    async def _ingest_one(event: Any) -> None:
        raw = event.value if isinstance(event.value, bytes) else str(event.value).encode()
        rt.counters.events_in += 1
        try:
            result = parse_event(raw, max_chars=settings.text_max_chars)
        except Exception as exc:  # the agent never dies on input
            logger.exception("ingest crashed on input; sending it to the DLQ")
            result = Rejection("invalid_field", f"internal error: {exc!r}")
        if isinstance(result, Rejection):
            rt.counters.events_rejected[result.reason] = (
                rt.counters.events_rejected.get(result.reason, 0) + 1
            )
            logger.info("rejected %s: %s", result.reason, result.detail)
            await dlq_topic.send(
                key=event.key,
                value=dlq_record(result.reason, result.detail, event.message, raw),
            )
            return
        if rt.metrics is not None:
            rt.metrics.event_received(result.event_id)
        if identity_here():
            rt.counters.identity_inline += 1
            await _identify_one(result.to_json(), event)
        else:
            await resolve_topic.send(key=None, value=result.to_json())

    graph = IdentityGraph(identity_table, salt=settings.person_salt.get_secret_value())
    resolve_tp = TP(resolve_topic.get_topic_name(), 0)

    def identity_here() -> bool:
        """Whether ingest may resolve an event's person itself: this worker holds the identity
        partition (the resolve topic's one) and no rebalance is under way (Faust ends a
        rebalance only once its tables are recovered). The graph's table writes follow this
        check with no ``await`` between, so they cannot land after the partition has moved;
        everything else is as if the event had crossed the resolve topic."""
        if not settings.inline_identity or app.rebalancing:
            return False
        return resolve_tp in app.consumer.assignment()

    @app.agent(resolve_topic)
    async def identity(stream: faust.StreamT[Any]) -> None:
        await ack_after(stream, lambda event: _identify_one(event.value, event))

    async def _identify_one(value: Any, source: Any) -> None:
        """Resolve one clean event's person and route its profile commands; ``source`` is the
        faust event it came from (ingest's or the resolve topic's)."""
        ev = Event.from_json(value)
        if ev.type == "erase":
            erased = graph.erase(ev.platform, ev.user_id)
            if erased is not None:
                pid, _accounts = erased
                await _to_person(pid, {"kind": "erase", "person": pid}, source)
            return
        res = graph.resolve(ev)
        for merge in res.merges:
            rt.counters.merges += 1
            logger.info("merged person %s into %s", merge.absorbed, merge.survivor)
            await _to_person(
                merge.absorbed,
                {"kind": "merge_out", "person": merge.absorbed, "into": merge.survivor},
                source,
            )
        if ev.type in ("link", "identify"):
            return
        await _to_person(
            res.person_id,
            {
                "kind": "event",
                "person": res.person_id,
                "accounts": list(res.accounts),
                "event": value,
            },
            source,
        )

    # --- profile commands without the persons topic's hop (stream.inline) -------------------
    persons_name = persons_topic.get_topic_name()
    router: InlineRouter[_Inline] = InlineRouter()
    inbox: asyncio.Queue[_Inline] = asyncio.Queue()  # dispatched, for the next profile batch

    async def _to_person(pid: str, cmd: dict[str, Any], source: Any) -> None:
        """Send ``cmd`` to ``pid``'s profile: straight into this worker's profile batches when
        it holds the person's partition (after that partition's barrier), else through the
        persons topic. Either way ``source`` is acked only once the command is applied or
        sent."""
        partition = await _inline_partition(pid)
        if partition is None:
            await persons_topic.send(key=pid, value=cmd)
            return
        item = _Inline(source, cmd, router.generation)
        source.message.incref()  # released by the batch that applies it (or sends it on)
        step = router.admit(partition, item.generation, item)
        if step is Step.DISPATCH:
            inbox.put_nowait(item)
        elif step is Step.HOLD_AND_SEND_BARRIER:
            await persons_topic.send(
                key=None,
                partition=partition,
                value={"kind": "barrier", "partition": partition, "generation": item.generation},
            )

    async def _inline_partition(pid: str) -> int | None:
        """``pid``'s persons partition if this worker may apply its commands itself: the setting
        is on, no rebalance is under way and this worker holds that partition. On the first
        call of a new rebalance generation, first settles every command of the last one."""
        if not settings.inline_profile:
            return None
        generation = app.rebalancing_count
        if app.rebalancing or router.generation != generation:
            await _retire_inline()
            if app.rebalancing or app.rebalancing_count != generation:
                return None
            if router.generation != generation:
                router.begin(generation)
        partition = app.consumer.key_partition(persons_name, pid.encode())
        if partition is None or TP(persons_name, partition) not in app.consumer.assignment():
            return None
        return int(partition)

    async def _retire_inline() -> None:
        """End the router's generation: commands still waiting for a barrier go to the topic
        (or, if their source moved, to its new owner's replay); then wait until every command
        already in a profile batch is done, so nothing routed afterwards overtakes them."""
        held = router.retire()
        if held:
            owned = await assignment_after_rebalance(app)
            for item in held:
                if item.source.message.tp in owned:
                    await persons_topic.send(key=item.command["person"], value=item.command)
                    rt.counters.inline_sent_on += 1
                    _release(item.source)
                else:
                    rt.counters.left_to_redelivery += 1
                router.done()
            logger.info(
                "rebalance: %d commands waiting for a barrier go through the persons topic",
                len(held),
            )
        await router.wait_idle()

    def _release(event: Any) -> None:
        """Drop one reference to ``event``; the last one lets its offset be committed."""
        if event.ack():
            app.sensors.on_message_out(event.message.tp, event.message.offset, event.message)

    async def _dispatch_inline(queue: asyncio.Queue[_Batch]) -> None:
        """Dispatched commands into profile batches: whatever has gathered (up to a batch)
        while the encoder was busy and the last batch waited for the applier, so batches grow
        with the load. A batch is formed only once the encoder has no call open (late binding,
        :mod:`stream.batching`). The persons-topic path does not wait so: there it made batches
        bigger and the paced latency worse (docs/performance-history.md, session 14)."""
        while True:
            items = await take_when_idle(inbox, rt.encoder_idle, settings.encoder_batch_size)
            batch = _prepare(
                [i.source for i in items],
                [i.command for i in items],
                items[0].generation,  # one generation: a new one starts only once all are done
                inline=True,
            )
            await queue.put(batch)

    async def _publish_recs(due: Sequence[Due], *, deferred: bool = False) -> None:
        """Publish recommendations for ``(person, trigger event, profile, accounts)`` in order:
        now, or — inside the person's refresh interval — left to the timer. Those due now are
        ranked together (the item vectors read once for all of them)."""
        now = time.monotonic()
        interval = settings.refresh_interval_s
        ready: list[Due] = []
        claimed: set[str] = set()  # a person's second event here falls inside its interval
        for pid, ev, prof, accounts in due:
            if interval > 0 and (pid in claimed or now - rt.last_refresh.get(pid, -1e9) < interval):
                rt.pending[pid] = (ev, accounts)
                continue
            rt.pending.pop(pid, None)
            claimed.add(pid)
            ready.append((pid, ev, prof, accounts))
        if not ready:
            return
        msgs = _rank(ready)
        for (pid, ev, prof, accounts), msg in zip(ready, msgs, strict=True):
            if msg is None:
                continue
            msg["trigger"]["deferred"] = deferred
            rt.last_refresh[pid] = now
            rt.counters.recommendations_out += 1
            encoded = faust_compat.json_bytes(msg)  # once, for the topic and for the ops page
            rt.latest_recs.put(pid, encoded)  # for /persons/{id}/recommendations
            if rt.metrics is not None:
                rt.metrics.recommendation_sent(ev.event_id, deferred=deferred)
            await recs_topic.send(key=pid, value=encoded, value_serializer="raw")
            await profiles_topic.send(key=pid, value=prof.to_json(pid, accounts))

    def _rank(
        ready: list[Due],
    ) -> list[dict[str, Any] | None]:
        """The messages for ``ready``, ranked together; if that fails, one by one, so one bad
        profile costs only its own recommendation."""
        now_ms = _now_ms()
        try:
            return recommendation_messages(ready, rt.index, settings, now_ms, signals=rt.signals)
        except Exception:
            logger.exception("ranking %d persons together failed; ranking one by one", len(ready))
        out: list[dict[str, Any] | None] = []
        for pid, ev, prof, accounts in ready:
            try:
                out.append(
                    recommendation_message(
                        pid, ev, prof, rt.index, settings, accounts, now_ms, signals=rt.signals
                    )
                )
            except Exception:
                logger.exception("recommendation failed for %s", pid)
                out.append(None)
        return out

    if settings.refresh_interval_s > 0:

        @app.timer(interval=max(0.05, settings.refresh_interval_s / 4))
        async def trailing_refresh() -> None:
            """A person's last change inside an interval still goes out once the interval ends."""
            now = time.monotonic()
            due: list[Due] = []
            for pid, (ev, accounts) in list(rt.pending.items()):
                if now - rt.last_refresh.get(pid, -1e9) < settings.refresh_interval_s:
                    continue
                prof = profiles.get(pid)
                if prof is None:  # erased, merged away, or moved to another worker
                    rt.pending.pop(pid, None)
                    continue
                due.append((pid, ev, prof, accounts))
            await _publish_recs(due, deferred=True)

    @app.agent(persons_topic)
    async def profile(stream: faust.StreamT[Any]) -> None:
        # Two stages: this loop takes a batch, holds its acks, and starts its encoder call;
        # ``_apply_batches`` waits for the vectors, applies the batch in order and releases the
        # acks. With one batch queued between them, the next batch is encoding while this one is
        # applied, and an offset is committed only after its event is in the profile table.
        # Commands routed without the topic (stream.inline) join the same queue in batches.
        queue: asyncio.Queue[_Batch] = asyncio.Queue(maxsize=1)
        applier = asyncio.ensure_future(_apply_batches(queue))
        dispatcher = asyncio.ensure_future(_dispatch_inline(queue))
        try:
            async for events in cast(Any, stream).take_events(
                settings.encoder_batch_size, within=settings.encoder_max_wait_ms / 1000.0
            ):
                for e in events:
                    e.message.incref()  # take_events acks on the next turn: hold the offsets
                batch = _prepare(events, [e.value for e in events], app.rebalancing_count)
                put = asyncio.ensure_future(queue.put(batch))
                await asyncio.wait({put, applier}, return_when=asyncio.FIRST_COMPLETED)
                if applier.done():  # the applier died (the encoder failed): so does the agent
                    put.cancel()
                    applier.result()
        finally:
            applier.cancel()
            dispatcher.cancel()

    def _prepare(
        events: Sequence[Any],
        commands: list[dict[str, Any]],
        generation: int,
        *,
        inline: bool = False,
    ) -> _Batch:
        parsed: list[Event | None] = [
            Event.from_json(c["event"]) if c.get("kind") == "event" else None for c in commands
        ]
        keys: list[str] = []
        texts: list[str] = []
        slot: dict[int, int] = {}
        for i, ev in enumerate(parsed):
            if ev is None:
                continue
            key = text_key(ev)
            text = ev.embed_text()
            if key is None or text is None:
                continue
            prof = profiles.get(commands[i]["person"])
            if prof is not None and prof.seen(ev.event_id):
                continue  # duplicate: skip the encoder too
            slot[i] = len(keys)
            keys.append(key)
            texts.append(text)
        vectors = asyncio.ensure_future(rt.embed(keys, texts)) if keys else None
        return _Batch(events, commands, parsed, slot, vectors, generation, inline)

    async def _apply_batches(queue: asyncio.Queue[_Batch]) -> None:
        while True:
            batch = await queue.get()
            vectors = await batch.vectors if batch.vectors is not None else None
            # A rebalance may overtake a held batch. Its events on partitions this worker still
            # owns afterwards are applied and acked as usual. Those on partitions now owned
            # elsewhere are neither applied nor acked: the new owner replays them from the last
            # commit, and a late write here could land in the changelog after its recovery, a
            # late ack commit an offset for a partition not ours (Faust's ack does not check).
            owned: set[Any] | None = None  # set once a rebalance has overtaken the batch
            # recommendations of the batch's events, published together once the batch is
            # learned (or before a merge or erase, so nothing about a person follows those)
            due: list[Due] = []
            covisits: list[dict[str, Any]] = []  # the batch's co-visit observations, sent once
            sent_on = 0  # inline commands a rebalance overtook, sent through the persons topic
            for i, cmd in enumerate(batch.commands):
                owned = await ownership(app, batch.generation, owned)
                if owned is not None and batch.events[i].message.tp not in owned:
                    continue
                kind = cmd.get("kind")
                if kind == "barrier":  # every earlier command of its partition is applied
                    generation = int(cmd.get("generation", -1))
                    if owned is None and generation == app.rebalancing_count:
                        for item in router.barrier_applied(int(cmd["partition"]), generation):
                            inbox.put_nowait(item)
                    continue
                if owned is not None and batch.inline:
                    # overtaken by a rebalance: the topic way (its person's partition may have
                    # moved), ahead of anything routed after the rebalance (stream.inline)
                    if due:
                        await _publish_due(due)
                    await persons_topic.send(key=cmd["person"], value=cmd)
                    rt.counters.inline_sent_on += 1
                    sent_on += 1
                    continue
                if kind != "event" and due:
                    await _publish_due(due)
                if batch.inline and kind == "event":
                    rt.counters.profile_inline += 1
                try:
                    await _apply(
                        cmd,
                        batch.parsed[i],
                        vectors[batch.slot[i]] if i in batch.slot and vectors is not None else None,
                        due,
                        covisits,
                    )
                except Exception:  # never die on one bad command
                    logger.exception("profile update failed for %s", cmd.get("person"))
            await _publish_due(due)
            await _publish_covisits(covisits)
            owned = await ownership(app, batch.generation, owned)
            left = 0
            for e in batch.events:
                if owned is not None and e.message.tp not in owned:
                    left += 1
                else:
                    _release(e)  # the last reference lets the offset be committed
            if batch.inline:
                router.done(len(batch.commands))
            if sent_on:
                logger.info(
                    "rebalance: %d commands of an inline batch went through the persons topic",
                    sent_on,
                )
            if left:
                rt.counters.left_to_redelivery += left
                logger.info(
                    "rebalance: %d events taken before it, on partitions now owned elsewhere, "
                    "are left to their new owner",
                    left,
                )

    async def _publish_due(due: list[Due]) -> None:
        try:
            await _publish_recs(due)
        except Exception:  # never die on one bad batch
            logger.exception("publishing %d recommendations failed", len(due))
        due.clear()

    async def _publish_covisits(observations: list[dict[str, Any]]) -> None:
        """The batch's co-visit evidence, in one record, to every worker's :class:`Signals` (this
        one's too) through the covisits topic; sent before the batch's offsets are released."""
        if not observations:
            return
        try:
            await covisits_topic.send(key=None, value=covisit_record(observations))
        except Exception:  # never die on one batch
            logger.exception("sending %d co-visit observations failed", len(observations))

    async def _apply(
        cmd: dict[str, Any],
        ev: Event | None,
        vector: Any,
        due: list[Due],
        covisits: list[dict[str, Any]],
    ) -> None:
        kind, pid = cmd.get("kind"), cmd["person"]
        if kind == "event" and ev is not None:
            prof = profiles.get(pid) or new_profile(settings)
            if prof.seen(ev.event_id):
                rt.counters.duplicates += 1
                return
            if ev.item is not None and vector is not None:
                known = rt.index.get(ev.item.id)
                if known is None or (known.platforms and ev.platform not in known.platforms):
                    rt.index.upsert(replace(ev.item, platforms=(ev.platform,)), vector)
                if known is None:  # tell the other workers' indexes, vector included
                    await items_topic.send(
                        key=ev.item.id,
                        value={
                            **ev.item.to_json(),
                            "platforms": [ev.platform],
                            "embedding": embedding_field(vector, rt.encoder.fingerprint),
                        },
                    )
                # co-visit evidence, taken before the profile learns the event
                covisits.append(rt.signals.observation(prof, ev.item.id, ev.ts, ev.event_id))
            prof.learn(observation(ev, vector, settings))
            profiles[pid] = prof
            if prof.last_change > 0:
                due.append((pid, ev, prof, list(cmd.get("accounts") or [])))
        elif kind == "merge_out":
            absorbed = profiles.pop(pid, None)
            rt.latest_recs.pop(pid)
            await profiles_topic.send(key=pid, value=None, value_serializer="raw")
            if absorbed is not None:
                payload = base64.b64encode(pickle.dumps(absorbed)).decode("ascii")
                await persons_topic.send(
                    key=cmd["into"],
                    value={
                        "kind": "merge_in",
                        "person": cmd["into"],
                        "from": pid,
                        "profile": payload,
                    },
                )
        elif kind == "merge_in":
            other: InterestProfile = pickle.loads(base64.b64decode(cmd["profile"]))
            prof = profiles.get(pid) or new_profile(settings)
            if prof.merge(other, source=cmd.get("from")):  # False: a replayed merge
                profiles[pid] = prof
        elif kind == "erase":
            profiles.pop(pid, None)
            rt.last_refresh.pop(pid, None)
            rt.pending.pop(pid, None)
            rt.latest_recs.pop(pid)
            rt.counters.erased += 1
            await profiles_topic.send(key=pid, value=None, value_serializer="raw")
            await recs_topic.send(key=pid, value=None, value_serializer="raw")

    @app.task
    async def replicate_items() -> None:
        await _replicate_items(app, rt, bootstrap)

    @app.task
    async def replicate_covisits() -> None:
        await _replicate_covisits(rt, bootstrap)

    app.agents_by_name = {"ingest": ingest, "identity": identity, "profile": profile}  # type: ignore[attr-defined]
    return app


async def _read_from_start(consumer: AIOKafkaConsumer, topic: str) -> bool:
    """Assign every partition of ``topic`` to a group-less ``consumer``, from the beginning."""
    parts: set[int] | None = None
    for _ in range(100):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            break
        await consumer.topics()
        await asyncio.sleep(0.5)
    if not parts:
        return False
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return True


async def _pause(settings: Settings) -> None:
    """Between replica reads: lets records gather, so the broker serves fewer, fuller fetches."""
    if settings.replica_poll_ms > 0:
        await asyncio.sleep(settings.replica_poll_ms / 1000.0)


async def _replicate_covisits(rt: Runtime, bootstrap: str) -> None:
    """Apply the whole covisits topic to this worker's :class:`Signals` (group-less, from the
    start: a restarted worker rebuilds the same evidence). A record whose item this worker's
    index does not hold yet waits in ``rt.unplaced_covisits`` and is retried each round."""
    topic = rt.settings.covisits_topic
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        if not await _read_from_start(consumer, topic):
            logger.warning("covisits topic %s not found; no collaborative evidence", topic)
            return
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            waiting, rt.unplaced_covisits = rt.unplaced_covisits, []
            for records in batches.values():
                for rec in records:
                    try:
                        waiting.extend(covisit_observations(json.loads(rec.value)))
                    except Exception as exc:
                        logger.warning("skipping bad covisit record at %s: %r", rec.offset, exc)
            for obs in waiting:
                try:
                    if rt.signals.count(rt.index, obs):
                        rt.counters.covisits_applied += 1
                    else:
                        rt.unplaced_covisits.append(obs)
                except Exception as exc:  # never die on one record
                    logger.warning("skipping covisit record %r: %r", obs, exc)
            del rt.unplaced_covisits[:-10_000]  # bounded: an item never seen is dropped
            await _pause(rt.settings)
    finally:
        await consumer.stop()


async def _replicate_items(app: faust.App, rt: Runtime, bootstrap: str) -> None:
    """Mirror the whole items topic into this worker's index (a group-less consumer)."""
    topic = rt.settings.items_topic
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        if not await _read_from_start(consumer, topic):
            logger.warning("items topic %s not found; item index is fed by events only", topic)
            return
        while True:
            batches = await consumer.getmany(
                timeout_ms=500, max_records=rt.settings.encoder_batch_size * 4
            )
            items: list[tuple[Item, Any]] = []
            for records in batches.values():
                for rec in records:
                    if rec.value is None:
                        continue
                    try:
                        d = json.loads(rec.value)
                        items.append((Item.from_json(d), d.get("embedding")))
                    except Exception as exc:
                        logger.warning("skipping bad item record at %s: %r", rec.offset, exc)
            fresh: list[Item] = []
            for item, embedding in items:
                # an item this worker indexed itself (it published it) comes back here: same
                # text, same vector — no second trip through the encoder's executor
                key = item_key(item)
                known = rt.index.get(item.id)
                vec = rt.index.vector(item.id)
                if known is not None and vec is not None and item_key(known) == key:
                    rt.index.upsert(item, vec)
                    continue
                # an item published with the vector an encoder like this one made (another
                # worker's, or this one's before a restart): indexed and cached as is, so the
                # group encodes its text once
                shared = embedding_from_field(embedding, rt.encoder.fingerprint, rt.encoder.dim)
                if shared is not None:
                    rt.index.upsert(item, shared)
                    rt.encoder.cache_put(key, shared)
                    rt.counters.item_vectors_shared += 1
                else:
                    fresh.append(item)
            if fresh:
                vectors = await rt.embed(
                    [item_key(i) for i in fresh], [i.embed_text() for i in fresh]
                )
                for item, vec in zip(fresh, vectors, strict=True):
                    rt.index.upsert(item, vec)
            await _pause(rt.settings)
    finally:
        await consumer.stop()
