"""``crossprofile bench``: dispatches to one benchmark (``encoder``, ``pipeline``, ``index``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def _encoder(argv: Sequence[str]) -> int:
    from stream.bench.encoder_bench import main

    return main(argv)


def _index(argv: Sequence[str]) -> int:
    from stream.bench.index_bench import main

    return main(argv)


def _pipeline(argv: Sequence[str]) -> int:
    from stream.bench.pipeline_bench import main

    return main(argv)


#: name → (entry point, one-line help).
BENCHMARKS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "encoder": (
        _encoder,
        "seed method vs batched PyTorch vs the ONNX encoder: sentences/s and parity",
    ),
    "pipeline": (
        _pipeline,
        "end to end through the broker and a real worker: events/s, latency, state size",
    ),
    "index": (
        _index,
        "the item index: every item scored vs HNSW candidates, ms per recommendation, overlap",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossprofile bench",
        description="Benchmarks. Each writes a JSON report (--json FILE) and prints a table.",
        epilog="examples:\n  crossprofile bench encoder --json .data/bench/encoder.json\n"
        "  crossprofile bench pipeline --json .data/bench/pipeline.json\n"
        "  crossprofile bench index --json .data/bench/index.json\n"
        "`crossprofile bench NAME --help` lists a benchmark's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    for name, (_fn, help_text) in BENCHMARKS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``crossprofile bench``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in BENCHMARKS:
        build_parser().parse_args(args or ["--help"])
        return 2
    fn, _help = BENCHMARKS[args[0]]
    return fn(args[1:])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
