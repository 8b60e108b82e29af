"""``crossprofile worker``: one Faust worker process (start more for scale-out)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust

from .gc_pauses import freeze_startup_objects
from .settings import Settings

logger = logging.getLogger(__name__)

EPILOG = """\
The worker creates the topics it needs (partition count: CROSSPROFILE_PARTITIONS), exports the
ONNX encoder on first use, then consumes CROSSPROFILE_TOPIC_PREFIX.events. Start a second worker
with the same settings (and another --web-port) to share the partitions; kill one and the other
takes over, rebuilding state from the changelog topics.

examples:
  crossprofile worker                                  # embedded broker (for trying things out)
  CROSSPROFILE_BROKER=127.0.0.1:9092 crossprofile worker --web-port 6067
"""


class _Worker(faust.Worker):
    """Faust's worker that also drops a file when it is ready (tests and the demo wait on it)."""

    ready_file: Path | None = None

    gc_freeze = False

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        if self.gc_freeze:
            freeze_startup_objects()
        if self.ready_file is not None:
            self.ready_file.write_text(str(os.getpid()))


def build_app(settings: Settings, bootstrap: str) -> faust.App:
    from export.encoder_export import ensure_encoder

    from .app import create_app
    from .broker import ensure_topics
    from .web import install_views

    ensure_encoder(settings)
    topics, compacted = settings.topic_plan()
    ensure_topics(bootstrap, topics, compacted=compacted)
    app = create_app(settings, bootstrap)
    install_views(app)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="crossprofile worker",
        description="Run a stream worker: validate, join identities, embed, profile, recommend.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--web-port", type=int, help="HTTP port for /health, /stats (0: off)")
    parser.add_argument("--ready-file", type=Path, help="write this file once the worker is ready")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.web_port is not None:
        overrides["web_port"] = args.web_port
    settings = Settings().model_copy(update=overrides)

    from .broker import kafka_for

    with kafka_for(settings) as bootstrap:
        app = build_app(settings, bootstrap)
        logger.info("worker starting: broker %s, topics %s.*", bootstrap, settings.topic_prefix)
        worker = _Worker(
            app, loglevel=settings.log_level.lower(), quiet=True, override_logging=False
        )
        worker.ready_file = args.ready_file
        worker.gc_freeze = settings.gc_freeze
        worker.execute_from_commandline()
    return 0


__all__ = ["build_app", "main"]
