"""A tiny real Faust app for the table-recovery tests (run as a worker subprocess).

    python tests/integration/recovery_app.py worker --without-web -l info

Configuration (environment):

- ``CROSSPROFILE_BROKER``, ``CROSSPROFILE_APP_ID``, ``CROSSPROFILE_PARTITIONS``: as everywhere
  (the app is built with :func:`stream.faust_compat.faust_app_options`).
- ``RECOVERY_SOURCE``: input topic; ``RECOVERY_ITEMS``: items topic (GlobalTable ``index``).
- ``RECOVERY_OUT``: directory for ``dump-<pid>.json`` and ``processed-<pid>.log``.
- ``RECOVERY_FAN``: table keys written per input event (``<key>/<j>``), default 5.
- ``RECOVERY_LINGER``: producer linger in seconds (default 0.1: many changelog records per
  batch, which is what exposes Tansu's wrong ListOffsets-latest).
- ``RECOVERY_COMPAT``: ``0`` leaves :func:`stream.faust_compat.apply` out (to show the bug).
- ``RECOVERY_SLEEP_MS``: sleep per input event (to be killed mid-stream).
- ``RECOVERY_GLOBAL_SYNC``: ``1`` creates the GlobalTable with
  ``synchronize_all_active_partitions=True``.
- ``RECOVERY_DROP_ONCE``: ``partition:offset,...`` of the source topic to drop the first time
  they are delivered, neither processed nor acked, as Faust's stream and fetch loop do to
  messages around a rebalance (docs/broker.md gap 11); the agent then acks by hand.

Input value ``"inc"`` increments the key's fan-out counters; ``"dump"`` writes the worker's view
of both tables to ``dump-<pid>.json`` (atomically). Every processed ``inc`` is appended as
``partition offset`` to ``processed-<pid>.log``, so a test can see re-deliveries.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import faust  # noqa: E402

from stream import faust_compat  # noqa: E402
from stream.settings import Settings  # noqa: E402

settings = Settings()
OUT = Path(os.environ["RECOVERY_OUT"])
FAN = int(os.environ.get("RECOVERY_FAN", "5"))
SLEEP_S = float(os.environ.get("RECOVERY_SLEEP_MS", "0")) / 1000.0
DROP_ONCE = {
    (int(p), int(o))
    for p, o in (x.split(":") for x in os.environ.get("RECOVERY_DROP_ONCE", "").split(",") if x)
}

options: dict[str, Any] = faust_compat.faust_app_options(settings)
options.update(
    store="memory://",
    web_enabled=False,
    datadir=str(OUT / "faust"),  # not <app_id>-data in the repository root
    producer_linger=float(os.environ.get("RECOVERY_LINGER", "0.1")),
)
app = faust.App(settings.app_id, **options)
if os.environ.get("RECOVERY_COMPAT", "1") != "0":
    faust_compat.apply(app)

source = app.topic(
    os.environ["RECOVERY_SOURCE"], key_type=str, value_type=str, partitions=settings.partitions
)
items = app.topic(
    os.environ["RECOVERY_ITEMS"], key_type=str, value_type=str, partitions=settings.partitions
)
counts = app.Table("counts", default=int, partitions=settings.partitions)
index = app.GlobalTable(
    "index",
    default=str,
    partitions=settings.partitions,
    synchronize_all_active_partitions=os.environ.get("RECOVERY_GLOBAL_SYNC") == "1",
)

_processed = (OUT / f"processed-{os.getpid()}.log").open("a", buffering=1)


def _dump() -> None:
    data = {
        "pid": os.getpid(),
        "counts": dict(counts.items()),
        "index": dict(index.items()),
    }
    tmp = OUT / f".dump-{os.getpid()}.json"
    tmp.write_text(json.dumps(data))
    tmp.replace(OUT / f"dump-{os.getpid()}.json")


@app.agent(source)
async def count(stream: faust.StreamT[str]) -> None:
    manual = bool(DROP_ONCE)
    events = stream.noack().events() if manual else stream.events()
    async for event in events:
        where = (event.message.partition, event.message.offset)
        if where in DROP_ONCE:
            DROP_ONCE.discard(where)
            _forget(event.message)
            continue
        if event.value != "dump":
            for j in range(FAN):
                counts[f"{event.key}/{j}"] += 1
            _processed.write(f"{event.message.partition} {event.message.offset}\n")
        else:
            _dump()
        if SLEEP_S:
            await asyncio.sleep(SLEEP_S)
        if manual:
            await stream.ack(event)


def _forget(message: Any) -> None:
    """What Faust does to a message it drops: never acked, no longer pending."""
    message.acked = True
    app.consumer._unacked_messages.discard(message)


@app.agent(items)
async def upsert(stream: faust.StreamT[str]) -> None:
    async for event in stream.events():
        index[str(event.key)] = str(event.value)


if __name__ == "__main__":
    app.main()
