"""Logging set-up, done once in the entry point: plain text for people, JSON lines for machines."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from .settings import Settings

_STD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _STD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class ClosedClientNoise(logging.Filter):
    """Drops kafka-python's "Metadata refresh: failed Cancelled" error: a client closed while a
    metadata request was in flight logs it (kafka-python 3.0), though nothing failed — the
    benchmarks and lag tools close their readers that way. Any other refresh failure passes.

    >>> f = ClosedClientNoise()
    >>> def rec(arg): return logging.LogRecord("kafka.cluster", 40, "", 0,
    ...     "Metadata refresh: failed %s", (arg,), None)
    >>> f.filter(rec(type("Cancelled", (Exception,), {})())), f.filter(rec(OSError("refused")))
    (False, True)
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.msg == "Metadata refresh: failed %s"
            and isinstance(record.args, tuple)
            and len(record.args) == 1
            and type(record.args[0]).__name__ == "Cancelled"
        )


def configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    if getattr(root, "_crossprofile", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in ("aiokafka", "kafka", "faust", "mode", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("kafka.cluster").addFilter(ClosedClientNoise())
    root._crossprofile = True  # type: ignore[attr-defined]


__all__ = ["ClosedClientNoise", "JsonFormatter", "configure_logging"]
