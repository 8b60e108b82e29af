"""Real worker processes and Kafka clients for integration tests (no mocks)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    """``crossprofile worker`` as a child process with its own env."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str) -> None:
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.ready = log_dir / f"{name}.ready"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> Worker:
        self.ready.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "stream.cli",
                    "worker",
                    "--web-port",
                    str(self.port),
                    "--ready-file",
                    str(self.ready),
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"worker not ready in {timeout}s:\n{self.log_tail()}")
            time.sleep(0.2)
        return self

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    def get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get("/stats")
        return result

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful: SIGTERM, as an orchestrator would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """Abrupt: SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


class Stack:
    """One test's world: a fresh topic prefix and group on the shared broker."""

    def __init__(self, bootstrap: str, data_dir: Path, log_dir: Path, **settings: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = "t" + uuid.uuid4().hex[:10]
        self.env = {
            **os.environ,
            "CROSSPROFILE_BROKER": bootstrap,
            "CROSSPROFILE_TOPIC_PREFIX": self.prefix,
            "CROSSPROFILE_APP_ID": self.prefix,
            "CROSSPROFILE_DATA_DIR": str(data_dir),
            "CROSSPROFILE_PARTITIONS": "2",
            "CROSSPROFILE_REFRESH_INTERVAL_S": "0",
            "CROSSPROFILE_LOG_LEVEL": "INFO",
            **{f"CROSSPROFILE_{k.upper()}": v for k, v in settings.items()},
        }
        self.log_dir = log_dir
        self.workers: list[Worker] = []
        self.readers: list[TopicReader] = []
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def worker(self) -> Worker:
        w = Worker(self.env, self.log_dir, f"{self.prefix}-w{len(self.workers)}")
        self.workers.append(w)
        return w.start()

    def send(self, events: Iterable[dict[str, Any] | bytes], topic: str = "events") -> None:
        """Produce in order; events are keyed by account, as platform producers do, so one
        account's events stay in order (different accounts' events may interleave)."""
        for ev in events:
            if isinstance(ev, bytes):
                self.producer.send(self.topic(topic), value=ev)
                continue
            key = f"{ev.get('platform')}:{ev.get('user_id')}" if "user_id" in ev else ev.get("id")
            self.producer.send(
                self.topic(topic), key=str(key).encode(), value=json.dumps(ev).encode()
            )
        self.producer.flush()

    def reader(self, name: str) -> TopicReader:
        reader = TopicReader(self.bootstrap, self.topic(name))
        self.readers.append(reader)
        return reader

    def close(self) -> None:
        for w in self.workers:
            w.kill()
        for reader in self.readers:
            reader.close()
        self.producer.close()


class TopicReader:
    """Reads a topic from the beginning, group-less, accumulating what it saw."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )
        self.records: list[Any] = []
        self._assigned = False

    def _assign(self) -> bool:
        parts = self.consumer.partitions_for_topic(self.topic)
        if not parts:
            return False
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self._assigned = True
        return True

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = 60.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._assigned and not self._assign():
                time.sleep(0.3)
                continue
            for batch in self.consumer.poll(timeout_ms=300).values():
                self.records.extend(batch)
            if predicate(self.records):
                return self.records
        raise AssertionError(f"timed out after {timeout}s on {self.topic}; saw {len(self.records)}")

    def values(self) -> list[Any]:
        return [None if r.value is None else json.loads(r.value) for r in self.records]

    def close(self) -> None:
        self.consumer.close()


def event(n: int, platform: str, user: str, etype: str = "view", **kw: Any) -> dict[str, Any]:
    return {
        "event_id": f"{platform}-{user}-{n}",
        "platform": platform,
        "user_id": user,
        "type": etype,
        "ts": 1_763_600_000_000 + n * 1000,
        **kw,
    }


def item(item_id: str, title: str, category: str) -> dict[str, Any]:
    return {"id": item_id, "title": title, "category": category}
