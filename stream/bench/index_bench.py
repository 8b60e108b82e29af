"""``crossprofile bench index``: the item index's exact scoring against its HNSW candidates.

In one run, for each catalogue size and each history length, the same profiles ask the same
:class:`stream.recommend.ItemIndex` question twice: scoring every item (``ann_min_items=0``, the
baseline) and scoring HNSW candidates rescored exactly (``ann_min_items=1``). Reported per
cell: ms per recommendation (median of repeats), overlap of the top 10 with the exact top 10,
and how often the candidates were too few and every item was scored anyway; per size, the cost
of inserting an item into the graph, and what building the graph costs the caller when it is
built at the threshold (in the background) rather than item by item from the first item on.

Vectors: the worker's encoder on distinct corpus texts (``--texts``); catalogues larger than
that are the encoded vectors plus slightly perturbed copies (cosine ≈ 0.96 to their source), so
the cluster structure of real sentence embeddings is kept. ``--synthetic`` skips the encoder
(clustered random vectors; for smoke tests, not for figures). Profiles learn ``history`` items
drawn near one random item (a person with a taste); the prior is sparse positive evidence on
50 random items, as co-visits give.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream.models import Item
from stream.profile import InterestProfile
from stream.recommend import ItemIndex
from stream.settings import Settings

K = 10
#: where a worker's graph starts by default
DEFAULT_ANN_MIN_ITEMS: int = Settings.model_fields["index_ann_min_items"].default


def clustered(n: int, dim: int, *, seed: int, clusters: int = 64) -> np.ndarray:
    """``n`` unit vectors around ``clusters`` random directions (smoke tests only).

    >>> v = clustered(100, 8, seed=1)
    >>> v.shape, bool(np.allclose(np.linalg.norm(v, axis=1), 1.0))
    ((100, 8), True)
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    v = centres[rng.integers(clusters, size=n)] + 0.6 * rng.normal(size=(n, dim))
    out: np.ndarray = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    return out


def widen(vectors: np.ndarray, n: int, *, seed: int, noise: float = 0.05) -> np.ndarray:
    """``n`` rows: ``vectors`` first, then perturbed, re-normalised copies of them.

    >>> v = clustered(10, 16, seed=2)
    >>> w = widen(v, 25, seed=3)
    >>> w.shape, bool(np.array_equal(w[:10], v)), float((w[10] @ v[0]).round(1)) > 0.8
    ((25, 16), True, True)
    """
    rng = np.random.default_rng(seed)
    parts = [vectors]
    total = len(vectors)
    while total < n:
        extra = vectors + noise * rng.normal(size=vectors.shape).astype(np.float32)
        parts.append(extra / np.linalg.norm(extra, axis=1, keepdims=True))
        total += len(vectors)
    return np.vstack(parts)[:n].astype(np.float32)


def profile_of(vectors: np.ndarray, rows: Sequence[int]) -> InterestProfile:
    """A profile that viewed items ``i{row}`` (vectors ``vectors[row]``) in this order."""
    profile = InterestProfile()
    for t, r in enumerate(rows):
        profile.learn_one(
            {"event_id": f"e{t}", "embedding": vectors[r], "weight": 1.0, "ts": t,
             "platform": "shop", "type": "view", "item_id": f"i{r}", "title": f"T{r}"}
        )  # fmt: skip
    return profile


def _timed(
    index: ItemIndex, profiles: list[InterestProfile], prior: np.ndarray, repeats: int
) -> tuple[float, list[list[str]]]:
    """(median ms per recommendation over ``repeats`` passes, the last pass's answers)."""
    per_pass: list[float] = []
    answers: list[list[str]] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        answers = [[r.item_id for r in index.recommend(p, K, prior=prior)] for p in profiles]
        per_pass.append((time.perf_counter() - t0) / len(profiles) * 1e3)
    return statistics.median(per_pass), answers


def kernel(data: np.ndarray, *, repeats: int = 20, seed: int = 7) -> list[dict[str, Any]]:
    """Exact scoring's kernel at this size: ``m`` interests × every item, as one matrix product
    (``rows @ vectors.T``, the index before session 6) and as :func:`stream.recommend._dot`
    (a matrix-vector product per row for up to 3 rows, else one product over the rows padded to
    a multiple of 4); median ms of ``repeats``."""
    from stream.recommend import _dot

    rng = np.random.default_rng(seed)
    out = []
    for m in (1, 2, 3, 4, 6, 8):
        rows = np.ascontiguousarray(data[rng.integers(len(data), size=m)])
        timings: dict[str, list[float]] = {"gemm": [], "dot": []}
        for _ in range(repeats):
            t0 = time.perf_counter()
            rows @ data.T
            t1 = time.perf_counter()
            _dot(rows, data)
            timings["gemm"].append(t1 - t0)
            timings["dot"].append(time.perf_counter() - t1)
        gemm, dot = (statistics.median(timings[k]) * 1e3 for k in ("gemm", "dot"))
        out.append({"interests": m, "one_matmul_ms": round(gemm, 3), "dot_ms": round(dot, 3)})
    return out


def _upserts(index: ItemIndex, data: np.ndarray) -> tuple[float, float]:
    """Upsert every row of ``data`` into ``index``: the total and the longest upsert, in ms."""
    longest = 0.0
    start = time.perf_counter()
    for i, v in enumerate(data):
        t0 = time.perf_counter()
        index.upsert(Item(f"i{i}", title=f"T{i}"), v)
        longest = max(longest, time.perf_counter() - t0)
    return (time.perf_counter() - start) * 1e3, longest * 1e3


def graph_build(data: np.ndarray, threshold: int) -> dict[str, Any]:
    """What the graph costs the caller (a worker's event loop) as ``data`` is upserted into an
    index whose graph starts at ``threshold`` items, built in the background past
    ``GRAPH_BUILD_INLINE_MAX``: the upserts' total and longest time, and when the graph was in
    use. (:func:`measure` sets it beside an index that inserts every item into its graph as it
    comes, the way before session 14.)"""
    index = ItemIndex(data.shape[1], ann_min_items=threshold)
    t0 = time.perf_counter()
    caller_ms, longest_ms = _upserts(index, data)
    while not index.wait_for_graph(0.01):  # a worker's next recommendation checks as often
        if time.perf_counter() - t0 > 600:
            raise RuntimeError("the graph was not ready within 10 minutes")
    return {
        "caller_ms": round(caller_ms, 1),
        "longest_ms": round(longest_ms, 2),
        "ready_after_ms": round((time.perf_counter() - t0) * 1e3, 1),
        "state": index.graph_state(),
    }


def measure(
    vectors: np.ndarray,
    sizes: Sequence[int],
    histories: Sequence[int],
    *,
    profiles: int = 30,
    repeats: int = 3,
    seed: int = 7,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One row per (size, history): exact vs HNSW ms per recommendation, overlap, fallbacks;
    and per size the exact kernel's timings (:func:`kernel`)."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for n in sizes:
        data = widen(vectors, n, seed=seed)
        kernels = kernel(data, seed=seed)
        threshold = min(n, DEFAULT_ANN_MIN_ITEMS)
        exact, ann = ItemIndex(data.shape[1]), ItemIndex(data.shape[1], ann_min_items=1)
        _upserts(exact, data)
        every_ms, every_longest = _upserts(ann, data)  # every item into the graph as it comes
        insert_ms = every_ms / n
        build = {
            "items": n,
            "threshold": threshold,
            "every_item_inserted": {
                "caller_ms": round(every_ms, 1),
                "longest_ms": round(every_longest, 2),
            },
            "built_at_threshold": graph_build(data, threshold),
        }
        prior = np.zeros(n, dtype=np.float32)
        prior[rng.integers(n, size=50)] = rng.random(50).astype(np.float32)
        for history in histories:
            people = []
            for _ in range(profiles):
                near = np.argsort(-(data @ data[rng.integers(n)]))[: max(3 * history, 10)]
                people.append(profile_of(data, rng.choice(near, history, replace=False).tolist()))
            exact_ms, want = _timed(exact, people, prior, repeats)
            before = ann.ann_fallbacks
            ann_ms, got = _timed(ann, people, prior, repeats)
            fallbacks = (ann.ann_fallbacks - before) / repeats
            pairs = zip(want, got, strict=True)
            overlap = [len(set(w) & set(g)) / max(1, len(w)) for w, g in pairs]
            row = {
                "items": n,
                "history": history,
                "interests_mean": round(float(np.mean([len(p.interests()) for p in people])), 2),
                "exact_ms": round(exact_ms, 3),
                "hnsw_ms": round(ann_ms, 3),
                "speedup": round(exact_ms / ann_ms, 2) if ann_ms > 0 else None,
                "overlap_at_10_mean": round(float(np.mean(overlap)), 4),
                "overlap_at_10_min": round(float(np.min(overlap)), 4),
                "fallback_share": round(fallbacks / len(people), 3),
                "hnsw_insert_ms": round(insert_ms, 3),
                "exact_kernel": kernels,
                "graph_build": build,
            }
            rows.append(row)
            if progress:
                print(
                    f"{n:>7,} items, history {history:>4}: exact {row['exact_ms']:.2f} ms, "
                    f"hnsw {row['hnsw_ms']:.2f} ms, overlap {row['overlap_at_10_mean']:.3f}",
                    file=sys.stderr,
                    flush=True,
                )
    return rows


def _encoded(texts: int, seed: int) -> np.ndarray:
    from stream.bench.streams import distinct_texts
    from stream.encoder import Encoder
    from stream.settings import Settings

    encoder = Encoder.from_settings(Settings())
    corpus = distinct_texts(texts, seed=seed)
    parts = [np.asarray(encoder.encode(corpus[i : i + 256])) for i in range(0, texts, 256)]
    return np.vstack(parts).astype(np.float32)


EPILOG = """\
examples:
  crossprofile bench index --json .data/bench/index.json            # ~2 min on 2 cores
  crossprofile bench index --sizes 10000,100000 --histories 2,50,200

what it says: whether CROSSPROFILE_INDEX_ANN_MIN_ITEMS (default 10000) is where the HNSW
candidates start to pay on this machine, and what they cost in recommendation overlap.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossprofile bench index",
        description="The item index: every item scored (exact) vs HNSW candidates rescored, "
        "ms per recommendation and top-10 overlap, per catalogue size and history length.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--json", type=Path, metavar="FILE", help="write the report here")
    add("--sizes", default="3000,6000,12000,24000,48000", help="catalogue sizes, comma-separated")
    add("--histories", default="2,20,200", help="events per profile, comma-separated")
    add("--profiles", type=int, default=30, help="profiles per cell (30)")
    add("--repeats", type=int, default=3, help="timed passes per cell; the median counts (3)")
    add("--texts", type=int, default=12_000, help="texts encoded for vectors (12000)")
    add("--synthetic", action="store_true", help="clustered random vectors, no encoder (smoke)")
    add("--seed", type=int, default=7, help="seed of texts, profiles and priors (7)")
    add("--quiet", "-q", action="store_true", help="no progress or table")
    return parser


def _ints(text: str, parser: argparse.ArgumentParser, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        parser.error(f"{flag} takes comma-separated whole numbers, e.g. 3000,12000")
    if not values or min(values) < 1:
        parser.error(f"{flag} needs at least one number, each >= 1")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``crossprofile bench index``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    sizes = _ints(args.sizes, parser, "--sizes")
    histories = _ints(args.histories, parser, "--histories")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as in a worker (stream/cli.py)
    # the index's "building the HNSW graph" lines would land between the progress lines; the
    # report gives the build's figures
    index_log = logging.getLogger("stream.recommend")
    level = index_log.level
    index_log.setLevel(logging.WARNING)
    t0 = time.perf_counter()
    try:
        if args.synthetic:
            vectors = clustered(min(args.texts, max(sizes)), 384, seed=args.seed)
        else:
            if not args.quiet:
                print(f"encoding {args.texts:,} texts …", file=sys.stderr, flush=True)
            vectors = _encoded(args.texts, args.seed)
        rows = measure(
            vectors,
            sizes,
            histories,
            profiles=args.profiles,
            repeats=args.repeats,
            seed=args.seed,
            progress=not args.quiet,
        )
    finally:
        index_log.setLevel(level)
    report = {
        "benchmark": "index",
        "vectors": "synthetic clustered" if args.synthetic else f"encoder, {len(vectors)} texts",
        "k": K,
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    if not args.quiet:
        print(format_table(rows))
        if args.json is not None:
            print(f"report: {args.json}")
    return 0


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The report's rows as a plain-text table.

    >>> print(format_table([{"items": 100, "history": 2, "interests_mean": 1.0, "exact_ms": 1.0,
    ...     "hnsw_ms": 0.5, "speedup": 2.0, "overlap_at_10_mean": 1.0, "fallback_share": 0.0}]))
    items  history  interests  exact ms  hnsw ms  speedup  overlap@10  fallbacks
      100        2        1.0      1.00     0.50     2.00       1.000      0.000
    """
    lines = ["items  history  interests  exact ms  hnsw ms  speedup  overlap@10  fallbacks"]
    for r in rows:
        first_of_size = r is next(x for x in rows if x["items"] == r["items"])
        if r.get("exact_kernel") and first_of_size:
            lines.append(
                "  exact kernel, ms as one matmul → as _dot: "
                + ", ".join(
                    f"{k['interests']} interests {k['one_matmul_ms']:.2f} → {k['dot_ms']:.2f}"
                    for k in r["exact_kernel"]
                )
            )
        build = r.get("graph_build")
        if build and first_of_size:
            every, lazy = build["every_item_inserted"], build["built_at_threshold"]
            lines.append(
                f"  graph, every item inserted as it comes: {every['caller_ms']:,.0f} ms on the "
                f"caller (longest upsert {every['longest_ms']:.1f}); built from "
                f"{build['threshold']:,} items: {lazy['caller_ms']:,.0f} ms (longest "
                f"{lazy['longest_ms']:.1f}), in use after {lazy['ready_after_ms']:,.0f} ms"
            )
        lines.append(
            f"{r['items']:>5}  {r['history']:>7}  {r['interests_mean']:>9.1f}  "
            f"{r['exact_ms']:>8.2f}  {r['hnsw_ms']:>7.2f}  {r['speedup']:>7.2f}  "
            f"{r['overlap_at_10_mean']:>10.3f}  {r['fallback_share']:>9.3f}"
        )
    return "\n".join(lines)
