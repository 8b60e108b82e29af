"""The ``crossprofile`` command line.

Every subcommand reads its defaults from :class:`stream.settings.Settings` (``CROSSPROFILE_*``
environment variables), so flags are only needed to override them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .logs import configure_logging
from .settings import Settings

EPILOG = """\
quick start:
  make run                      # embedded broker + worker + MovieLens demo, prints a summary
  crossprofile demo --limit 3000 --summary out/summary.json

point at a real Kafka instead of the embedded broker:
  CROSSPROFILE_BROKER=kafka-1:9092 crossprofile worker

configuration: every setting is an environment variable CROSSPROFILE_<NAME>
(e.g. CROSSPROFILE_PARTITIONS=8, CROSSPROFILE_DATA_DIR=.data);
`crossprofile settings` prints them all with their current values.
"""


def _cmd_broker(argv: Sequence[str]) -> int:
    from .broker import main

    return main(list(argv))


def _cmd_export(argv: Sequence[str]) -> int:
    from export.encoder_export import main

    return int(main(list(argv)))


def _cmd_worker(argv: Sequence[str]) -> int:
    # numpy's BLAS on one thread: a worker's matrix products are small (8 interests x 384 x the
    # catalogue) and BLAS threads fighting onnxruntime's for the cores made ranking 2.5-4x slower
    # (1,000 items: 1.02 -> 0.40 ms; 3,000: 3.3 -> 0.77 ms). Set before numpy loads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from .worker import main

    return main(list(argv))


def _cmd_lag(argv: Sequence[str]) -> int:
    from .lag import main

    return main(list(argv))


def _cmd_demo(argv: Sequence[str]) -> int:
    from .demo import main

    return main(list(argv))


def _cmd_bench(argv: Sequence[str]) -> int:
    from .bench.cli import main

    return main(list(argv))


def _cmd_evaluate(argv: Sequence[str]) -> int:
    from .evaluate.cli import main

    return main(list(argv))


def _cmd_settings(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="crossprofile settings",
        description="Print every setting, its environment variable and its current value.",
        epilog="Set any of them in the environment, e.g.\n"
        "  CROSSPROFILE_PARTITIONS=8 CROSSPROFILE_BROKER=kafka-1:9092 crossprofile worker\n"
        "Secrets (CROSSPROFILE_PERSON_SALT) are shown masked.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(list(argv))
    s = Settings()
    for name, info in Settings.model_fields.items():
        value = getattr(s, name)
        print(f"CROSSPROFILE_{name.upper():<28} {value!s:<32} {info.description or ''}".rstrip())
    return 0


COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "broker": (_cmd_broker, "run the embedded Kafka-compatible broker (Tansu) in the foreground"),
    "worker": (_cmd_worker, "run a stream worker (Faust): events in, recommendations out"),
    "demo": (_cmd_demo, "replay MovieLens-1M as cross-platform events and watch recommendations"),
    "export-encoder": (_cmd_export, "export the sentence encoder to ONNX and check parity"),
    "lag": (_cmd_lag, "consumer lag per group/topic/partition (like kafka-consumer-groups)"),
    "settings": (_cmd_settings, "show the configuration (CROSSPROFILE_* environment variables)"),
    "evaluate": (_cmd_evaluate, "prequential recommendation quality vs baselines (Recall/NDCG@10)"),
    "bench": (
        _cmd_bench,
        "benchmarks: `bench encoder` (sentences/s), `bench pipeline` (events/s, latency)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossprofile",
        description="Real-time cross-platform user profiles and recommendations.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"crossprofile {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_fn, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not args or args[0] not in COMMANDS:
        parser.parse_args(args or ["--help"])
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    configure_logging(Settings())
    fn, _ = COMMANDS[args[0]]
    try:
        return fn(args[1:])
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one readable line for the user, the trace at debug level
        logging.getLogger("crossprofile").debug("failed", exc_info=True)
        print(f"crossprofile {args[0]}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
