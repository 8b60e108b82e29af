"""``crossprofile bench pipeline``: the whole stream, end to end, through the broker.

One run starts (or reuses, with ``CROSSPROFILE_BROKER``) a broker, one real ``crossprofile
worker`` process on a fresh topic prefix and consumer group, and measures:

* **raw encoder** — :class:`stream.encoder.Encoder` (the worker's class and settings, cache off)
  on the texts the unique stream will send, in calls of ``encoder_batch_size`` texts in stream
  order (what one worker batch can do at best), median of repeats; and, for reference, one
  length-sorted call over all of them. Measured before the worker starts, so nothing competes.
* **max sustained events/s** for two streams — *unique* (every event a new item with a new
  text: every event needs the encoder) and *zipf* (items drawn by Zipf(s) popularity from a
  fixed catalogue with stable ids: the worker's item-embedding cache hits). The producer keeps a
  bounded backlog ahead of the worker (a few seconds of work, never empty), so the worker is
  always busy but its first stages cannot run far ahead of the last one. Progress is the count
  of records on the profile table's changelog: the worker writes one per event it learned, after
  ingest, identity, embedding and the profile update. After a warm-up, the rate over a fixed
  window is the figure; then production stops and the backlog drains, so each phase ends with
  ``learned == produced``.
* **event → recommendation latency** — unique events produced at a paced rate (half the unique
  max rate), from just before ``send`` to the moment a recommendation naming the event as its
  trigger is read back from the recommendations topic (deferred ones — held back by the
  person's refresh interval — are counted apart). Each event's latency is also split by hop
  (:mod:`stream.bench.hops`: to ingest's output, to identity's, to the recommendation, to the
  reader) from the internal topics' record times, beside the worker's event-loop lag. The p99
  comes with a distribution-free 95 % interval (:func:`stream.bench.stats.quantile_interval`),
  and the p99 target says whether it is met beyond that run's sampling noise.
* **profile state size** — bytes of one person's :class:`stream.profile.InterestProfile` after
  10, 100 and 1,000 events, encoded with Faust's ``pickle`` codec exactly as the worker's
  profile table stores it (and as raw ``pickle.dumps``), computed in this process.

Where the time goes: per window, the worker's, broker's and this process's CPU use
(``/proc``), and the deltas of the worker's ``/stats`` encoder counters (batches, texts, seconds
spent in the encoder, cache hits) and of its event loop's busy time (:mod:`stream.loop_busy`):
a loop busy near 1 is the bound, not the encoder. Benchmarks print figures; tests only check
their consistency.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from stream.bench.hops import HOPS
from stream.bench.in_process import encoder_throughput, pure_costs, state_sizes
from stream.bench.phases import LATENCY_SLICE_S, run_phases, say
from stream.bench.rig import WorkerGroup, WorkerProcess, load_average
from stream.bench.stats import percentiles, ratio, sustained_rate, targets
from stream.bench.streams import EventStream, ZipfSampler, distinct_texts, unique_items, zipf_items
from stream.bench.texts import DEFAULT_SEED

if TYPE_CHECKING:
    from stream.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """What one run does (see ``--help``)."""

    warmup_s: float = 10.0
    window_s: float = 30.0
    latency_s: float = 20.0
    latency_rate: float | None = None  # None: half the unique max rate
    latency_warmup_s: float = 3.0
    backlog_s: float = 4.0
    backlog_min: int = 100
    zipf_items: int = 10_000
    zipf_s: float = 1.1
    #: Zipf events sent and learned (unmeasured) before the Zipf max-rate phase
    zipf_prewarm: int = 0
    users: int = 5_000
    encoder_texts: int = 1_000
    encoder_repeats: int = 3
    drain_timeout_s: float = 180.0
    seed: int = 7
    workers: int = 1
    quick: bool = False


QUICK: Final = Options(
    warmup_s=2.0,
    window_s=4.0,
    latency_s=4.0,
    latency_warmup_s=1.0,
    backlog_min=40,
    zipf_items=300,
    users=100,
    encoder_texts=64,
    encoder_repeats=1,
    drain_timeout_s=120.0,
    quick=True,
)


# --- run -----------------------------------------------------------------------------------------


def _settings_used(settings: Settings) -> dict[str, Any]:
    keys = (
        "encoder_batch_size", "encoder_max_wait_ms", "encoder_threads", "encoder_variant",
        "encoder_provider", "encoder_max_tokens", "encoder_cache_size", "encoder_call_cost_tokens",
        "partitions", "refresh_interval_s", "fetch_max_wait_ms", "producer_linger_ms",
        "max_interests", "top_k", "log_level", "index_ann_min_items", "inline_identity",
        "inline_profile",
    )  # fmt: skip
    dumped = settings.model_dump()
    return {
        **{k: dumped[k] for k in keys},
        "encoder_intra_threads": settings.encoder_intra_threads(),
    }


def _worker_env(settings: Settings, bootstrap: str, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "CROSSPROFILE_BROKER": bootstrap,
        "CROSSPROFILE_TOPIC_PREFIX": prefix,
        "CROSSPROFILE_APP_ID": prefix,
        "CROSSPROFILE_DATA_DIR": str(settings.data_dir),
    }


def _streams(opts: Options, pool_size: int) -> tuple[list[str], EventStream, EventStream, Any]:
    texts = distinct_texts(opts.zipf_items + pool_size, seed=DEFAULT_SEED + opts.seed)
    catalogue, fresh = texts[: opts.zipf_items], texts[opts.zipf_items :]
    sampler = ZipfSampler(opts.zipf_items, opts.zipf_s, seed=opts.seed)
    unique = EventStream("unique", unique_items(fresh), users=opts.users, seed=opts.seed)
    zipf = EventStream("zipf", zipf_items(catalogue, sampler), users=opts.users, seed=opts.seed + 1)
    return fresh, unique, zipf, sampler


def measure_in_process(
    opts: Options, settings: Settings, fresh: Sequence[str], progress: bool
) -> dict[str, Any]:
    """Raw encoder on the unique stream's first texts, state size and pure per-event costs."""
    from stream.encoder import Encoder

    first = unique_items(fresh)
    texts = [f"{first(i)['title']}. {first(i)['category']}" for i in range(opts.encoder_texts)]
    enc = Encoder.from_settings(settings.model_copy(update={"encoder_cache_size": 0}))
    say(progress, f"raw encoder: {len(texts)} texts …")
    encoder, embeddings = encoder_throughput(
        enc, texts, settings.encoder_batch_size, opts.encoder_repeats
    )
    del enc
    return {
        "encoder_raw": encoder,
        "state_bytes_per_person": state_sizes(embeddings, settings),
        "pure_steps": pure_costs(embeddings, settings, events=100 if opts.quick else 400),
    }


def run(opts: Options, *, progress: bool = True) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-ready report."""
    from export.encoder_export import ensure_encoder
    from stream.broker import EmbeddedBroker
    from stream.settings import Settings

    started = time.monotonic()
    settings = Settings()
    load_start = load_average()
    ensure_encoder(settings, progress=progress)
    # the unique stream needs at most a few minutes of texts at any plausible CPU rate
    fresh, unique, zipf, sampler = _streams(opts, 2_000 if opts.quick else 60_000)
    measured = measure_in_process(opts, settings, fresh, progress)

    broker: EmbeddedBroker | None = None
    if settings.broker:
        bootstrap = settings.broker
    else:
        broker = EmbeddedBroker(log_dir=settings.data_dir / "logs").start()
        bootstrap = broker.bootstrap
    prefix = "bench" + uuid.uuid4().hex[:8]
    logs = settings.data_dir / "logs"
    worker = WorkerGroup(
        [
            WorkerProcess(
                _worker_env(settings, bootstrap, prefix),
                logs / ("bench-pipeline-worker.log" if i == 0 else f"bench-pipeline-worker{i}.log"),
            )
            for i in range(opts.workers)
        ]
    )
    try:
        pids: dict[str, int | list[int] | None] = {
            "worker": None,
            "broker": None if broker is None else broker.pid,
        }
        streamed = run_phases(
            opts, settings, bootstrap, prefix, worker, pids, (unique, zipf), progress
        )
    finally:
        worker.stop()
        if broker is not None:
            broker.stop()
    raw = measured["encoder_raw"]["sentences_per_s"]
    phases = streamed["pipeline"]
    before = (streamed.get("zipf_prewarm") or {}).get("events_produced", 0)
    zipf_events = phases["zipf"]["events_produced"]
    distinct_before, distinct_after = (
        sampler.expected_distinct(before),
        sampler.expected_distinct(before + zipf_events),
    )
    report: dict[str, Any] = {
        "benchmark": "pipeline",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": opts.quick,
        "options": asdict(opts),
        "settings": _settings_used(settings),
        **measured,
        **streamed,
        "zipf": {
            "items": sampler.n,
            "s": sampler.s,
            "top_100_share": round(float(sampler.probabilities[:100].sum()), 3),
            "prewarm_events": before,
            "expected_distinct_items": round(distinct_after),
            # the share of the phase's events whose item no earlier event had: the encoder's
            # floor however warm the rest is (what caps the Zipf ratio; docs/performance.md)
            "expected_first_seen_share": round(
                (distinct_after - distinct_before) / max(1, zipf_events), 3
            ),
        },
        "ratios": {
            "pipeline_unique_vs_encoder": ratio(phases["unique"]["events_per_s"], raw),
            "pipeline_zipf_vs_encoder": ratio(phases["zipf"]["events_per_s"], raw),
        },
        "machine": {
            "cpus": os.cpu_count(),
            # BLAS threads matter: the worker's item-index matmuls run on the event loop
            "thread_env": {
                k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
            },
            "python": platform.python_version(),
            "load_average_start": load_start,
            "load_average_end": load_average(),
        },
        "broker": "embedded (Tansu)" if broker is not None else bootstrap,
        "seconds": round(time.monotonic() - started, 1),
    }
    report["targets"] = targets(report)
    return report


#: a target with a sampling interval: met or missed beyond the run's noise, or not
_CLEAR: Final = {True: ", clearly", False: ", clearly", None: ", within this run's noise"}


def _num(x: Any, fmt: str = ".1f") -> str:
    return "–" if x is None else format(x, fmt)


def _gc_line(gc: Mapping[str, Any] | None) -> str | None:
    """``share of the window / longest recent full collection`` of a phase's GC pauses.

    >>> _gc_line({"share_of_window": 0.0123, "recent_max_ms": {"2": 41.5}})
    '1.2 % / 41.5'
    """
    if not gc or gc.get("share_of_window") is None:
        return None
    longest = (gc.get("recent_max_ms") or {}).get("2")
    return f"{100 * gc['share_of_window']:.1f} % / {_num(longest)}"


#: the busy share (per worker) from which a part is named a max-rate phase's bound
BOUND_SHARE = 0.9


def bound_by(where: Mapping[str, Any], workers: int = 1) -> str:
    """Which part held a max-rate phase back, from its busy shares (summed over ``workers``).

    >>> bound_by({"encoder_busy_share": 0.99, "event_loop_busy_share": 0.39})
    'the encoder (busy 0.99)'
    >>> bound_by({"encoder_busy_share": 0.8, "event_loop_busy_share": 1.94}, workers=2)
    'the event loop (busy 0.97)'
    >>> bound_by({"encoder_busy_share": 0.5, "event_loop_busy_share": 0.6})
    'neither (the machine, the broker or the load generator)'
    """
    per_worker = {
        name: share / max(1, workers)
        for name, share in (
            ("the encoder", where.get("encoder_busy_share")),
            ("the event loop", where.get("event_loop_busy_share")),
        )
        if share is not None
    }
    full = {name: share for name, share in per_worker.items() if share >= BOUND_SHARE}
    if not full:
        return "neither (the machine, the broker or the load generator)"
    return " and ".join(f"{name} (busy {share:.2f})" for name, share in full.items())


def format_table(report: Mapping[str, Any]) -> str:
    """The figures as a plain-text table, then the targets."""
    enc, lat = report["encoder_raw"], report["latency"]
    head = f"{'measure':<44} {'value':>14}"
    lines = [head, "-" * len(head)]

    def row(name: str, value: str) -> None:
        lines.append(f"{name:<44} {value:>14}")

    row(f"raw encoder, batch {enc['batch_size']} (sentences/s)", _num(enc["sentences_per_s"]))
    row("raw encoder, one sorted call (sentences/s)", _num(enc["sentences_per_s_one_sorted_call"]))
    workers = int((report.get("options") or {}).get("workers") or 1)
    for name, ph in report["pipeline"].items():
        w = ph["where_time_goes"]
        row(f"pipeline {name} (events/s)", _num(ph["events_per_s"]))
        cores = _num(w["cpu_cores_used"].get("worker"), ".2f")
        row(
            f"  {name}: CPU cores / encoder / loop busy",
            f"{cores} / {w['encoder_busy_share']} / {w.get('event_loop_busy_share')}",
        )
        lines.append(f"  {name}: bound by {bound_by(w, workers)}")
        row(f"  {name}: cache hit rate", _num(w["cache_hit_rate"], ".3f"))
        gc_line = _gc_line(w.get("gc_pauses"))
        if gc_line:
            row(f"  {name}: GC pauses, share / longest full (ms)", gc_line)
        if name == "zipf":
            z = report.get("zipf") or {}
            row(
                "  zipf: items never seen before (expected)",
                _num(z.get("expected_first_seen_share"), ".3f"),
            )
            if z.get("prewarm_events"):
                row("  zipf: events learned before (--zipf-prewarm)", str(z["prewarm_events"]))
    row("worker idle (CPU cores)", _num(report["worker_idle"]["cpu_cores_used"]["worker"], ".3f"))
    pure = report["pure_steps"]
    row("pure steps in-process (ms/event)", _num(pure["ms_per_event"]["total"], ".2f"))
    for key, value in report["ratios"].items():
        row(key, _num(value, ".3f"))
    row(f"latency p50 at {lat['rate_target']:g} events/s (ms)", _num(lat["latency_ms"]["p50"]))
    row(f"latency p99 at {lat['rate_target']:g} events/s (ms)", _num(lat["latency_ms"]["p99"]))
    lo, hi = lat.get("latency_p99_ci95_ms") or (None, None)
    row("  p99's 95 % interval (ms)", f"{_num(lo)} – {_num(hi)}")
    slices = lat.get("latency_by_slice_ms") or []
    if len(slices) > 1:
        lines.append(f"  p50 / p99 by {LATENCY_SLICE_S:g}-s slice (ms): " + ", ".join(
            f"{_num(q['p50'])} / {_num(q['p99'])}" for q in slices
        ))  # fmt: skip
    by_hop = lat.get("by_hop") or {}
    # every event resolved and learned where it came in: the two hops before the profile's are
    # empty (0), and its hop starts at the bench's send
    n = by_hop.get("events", 0)
    inline = n > 0 and by_hop.get("identity_inline") == n == by_hop.get("profile_inline")
    for hop, q in by_hop.get("hops_ms", {}).items():
        if inline and hop in HOPS[:2]:
            continue
        name = "send_to_recommendation" if inline and hop == HOPS[2] else hop
        row(f"  {name} p50 / p99 (ms)", f"{_num(q['p50'])} / {_num(q['p99'])}")
    lw = lat["where_time_goes"]
    loop_lag = lw.get("event_loop_lag_ms") or {}
    if loop_lag.get("readings"):
        lag = f"{loop_lag['p50_ms']} / {loop_lag['p99_ms']}"
        row("  worker event-loop lag p50 / p99 (ms)", lag)
    if lw.get("event_loop_busy_share") is not None:
        row(
            "  worker encoder / event-loop busy",
            f"{lw['encoder_busy_share']} / {lw['event_loop_busy_share']}",
        )
    gc_line = _gc_line(lw.get("gc_pauses"))
    if gc_line:
        row("  worker GC pauses, share / longest full (ms)", gc_line)
    for n, sizes in report["state_bytes_per_person"].items():
        row(f"profile state after {n} events (bytes)", str(sizes["codec_bytes"]))
    lines.append("")
    for name, t in report["targets"].items():
        lines.append(
            f"target {name} {t['target']:g}: {_num(t['value'], 'g')} → "
            f"{'met' if t['met'] else 'NOT met'}{_CLEAR[t['clear']] if 'clear' in t else ''}"
        )
    tot = report["totals"]
    lines.append(
        f"events produced {tot['events_produced']}, learned {tot['events_learned']}, "
        f"worker saw {tot['worker_events_in']}; run took {report['seconds']:.0f} s"
    )
    return "\n".join(lines)


EPILOG = """\
what it does: starts the embedded broker (or uses CROSSPROFILE_BROKER) and one real worker (or a
group of --workers N, whose CPU and counters are summed) on a fresh topic prefix, measures the raw
encoder on the unique stream's texts, then drives the worker as hard as it goes with (i) unique
events (every item and text new) and (ii) a Zipf(s) stream over a fixed catalogue (the embedding
cache hits), then times event → recommendation at half the unique
max rate. Worker settings (batch size, max wait, threads, …) come from CROSSPROFILE_* variables and
are recorded in the report. A default run takes about 3–5 minutes (each extra worker adds its
start-up). One worker's event loop is the bound once the encoder is fast (a GPU, a big CPU):
--workers shows how the group scales, up to one worker per partition of the events topic.

examples:
  crossprofile bench pipeline --json .data/bench/pipeline.json
  crossprofile bench pipeline --window 20 --warmup 5 --latency-duration 10 --json out.json
  CROSSPROFILE_ENCODER_BATCH_SIZE=64 crossprofile bench pipeline --json b64.json
  crossprofile bench pipeline --quick --json /tmp/quick.json        # ~1 minute, for tests
  crossprofile bench pipeline --workers 4 --json w4.json             # a group of four

Figures vary with the machine's load; compare within one run. Tests never assert speeds.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossprofile bench pipeline",
        description="End-to-end events/s (unique and Zipf streams), event → recommendation "
        "latency, raw encoder throughput and profile state size, through the broker and a real "
        "worker, in one run.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--json", type=Path, metavar="FILE", help="write the report here")
    add("--warmup", type=float, metavar="S", help="seconds before each max-rate window (10)")
    add("--window", type=float, metavar="S", help="max-rate measuring window, seconds (30)")
    add(
        "--latency-duration",
        type=float,
        metavar="S",
        help="paced latency phase, seconds (20); the report gives the p99 with a 95 %% interval "
        "(about the 12th- to 2nd-largest of ~600 latencies), which a longer phase narrows",
    )
    add("--latency-rate", type=float, metavar="R", help="events/s (default: half unique max)")
    add("--zipf-items", type=int, metavar="N", help="catalogue size of the Zipf stream (10000)")
    add("--zipf-s", type=float, metavar="S", help="Zipf exponent (1.1)")
    add(
        "--zipf-prewarm",
        type=int,
        metavar="N",
        help="send N Zipf events, unmeasured, before the Zipf phase (0): its window then sees "
        "a worker that has run longer, as a production one has; the report gives the share of "
        "the window's events whose item is new either way",
    )
    add("--users", type=int, metavar="N", help="accounts events are spread over (5000)")
    add("--encoder-texts", type=int, metavar="N", help="texts for the raw encoder (1000)")
    add("--backlog", type=float, metavar="S", help="seconds of work kept queued (4)")
    add("--seed", type=int, metavar="N", help="seed of texts, users and draws (7)")
    add(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes in the group (1); more than CROSSPROFILE_PARTITIONS sit idle",
    )
    add("--quick", action="store_true", help="a smoke run of about a minute (tests, CI)")
    add("--quiet", "-q", action="store_true", help="no progress or table")
    return parser


def options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Options:
    """Options from the command line, over the defaults (or the ``--quick`` ones)."""
    base = QUICK if args.quick else Options()
    flags = {
        "warmup_s": args.warmup, "window_s": args.window, "latency_s": args.latency_duration,
        "latency_rate": args.latency_rate, "zipf_items": args.zipf_items, "zipf_s": args.zipf_s,
        "zipf_prewarm": args.zipf_prewarm,
        "users": args.users, "encoder_texts": args.encoder_texts, "backlog_s": args.backlog,
        "seed": args.seed, "workers": args.workers,
    }  # fmt: skip
    opts = Options(**{**asdict(base), **{k: v for k, v in flags.items() if v is not None}})
    if opts.window_s < 1 or opts.latency_s < 1 or opts.warmup_s < 0:
        parser.error("--window and --latency-duration must be >= 1 s, --warmup >= 0")
    if min(opts.zipf_items, opts.users, opts.encoder_texts) < 1 or opts.zipf_s <= 0:
        parser.error("--zipf-items, --users, --encoder-texts must be >= 1 and --zipf-s > 0")
    if opts.latency_rate is not None and opts.latency_rate <= 0:
        parser.error("--latency-rate must be > 0")
    if opts.workers < 1:
        parser.error("--workers must be >= 1")
    if opts.zipf_prewarm < 0:
        parser.error("--zipf-prewarm must be >= 0")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``crossprofile bench pipeline``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    opts = options(args, parser)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    report = run(opts, progress=not args.quiet)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", "utf-8")
    if not args.quiet:
        print(format_table(report))
        if args.json is not None:
            print(f"report: {args.json}")
    return 0


# ZipfSampler, distinct_texts, percentiles, state_sizes and sustained_rate are re-exported: they
# were this module's public API before it was split into streams, stats, in_process, rig, phases.
__all__ = [
    "Options",
    "ZipfSampler",
    "distinct_texts",
    "format_table",
    "main",
    "percentiles",
    "run",
    "state_sizes",
    "sustained_rate",
]
