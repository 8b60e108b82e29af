"""One evaluation run: every method through the protocol (in parallel processes), the
cross-platform uplift, the verdict, and the plot."""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..recommend import Signals
from ..settings import Settings
from .data import EvalData
from .methods import CrossProfile, make_methods
from .png import COLOURS
from .protocol import K, Result, Tally, run_prequential, split_index, summarise

HEAD = 0.8
ALL = "all"  # --uplift-platform all: measure the uplift on every platform's events
COLD_ACCOUNT_EVENTS = 5

# Inherited by forked workers (never pickled): the data are large and read-only.
_STATE: dict[str, Any] = {}


def _task(task: tuple[str, str]) -> tuple[tuple[str, str], Result]:
    kind, name = task
    data: EvalData = _STATE["data"]
    emb: np.ndarray = _STATE["emb"]
    settings: Settings = _STATE["settings"]
    params: dict[str, dict[str, Any]] = _STATE["params"]
    method = make_methods(data, emb, [name], params, settings=settings)[0]
    done = _STATE.get("done")
    slot = _STATE["tasks"].index(task)

    def progress(i: int) -> None:
        if done is not None:
            done[slot] = i

    result = _replay(kind, data, method, progress)
    progress(len(data))
    return task, result


def _replay(kind: str, data: EvalData, method: Any, progress: Callable[[int], None]) -> Result:
    if kind == "main":
        return run_prequential(data, method, head=HEAD, progress=progress)
    # the uplift run: every account on its own (no joins), asked only where joins matter (the
    # events of joined persons) and only on the platform(s) measured
    joined = data.joined_users
    platform = _STATE["uplift_platform"]
    code = data.platforms.index(platform) if platform in data.platforms else -1
    if platform == ALL:
        return run_prequential(
            data,
            method,
            persons=data.account,
            head=HEAD,
            only=lambda i: data.user[i] in joined,
            progress=progress,
        )
    return run_prequential(
        data,
        method,
        persons=data.account,
        head=HEAD,
        only=lambda i: data.platform[i] == code and data.user[i] in joined,
        progress=progress,
    )


def evaluate(
    data: EvalData,
    emb: np.ndarray,
    settings: Settings,
    *,
    methods: Sequence[str],
    uplift: bool = True,
    uplift_platform: str = "shop",
    jobs: int = 1,
    params: dict[str, dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run ``methods`` (and the uplift replay) over ``data``; the report as a JSON-able dict.

    ``progress`` shows one bar on stderr: events replayed, summed over every method's replay.
    """
    overrides = params or {}
    params = {
        CrossProfile.name: dict(overrides.get(CrossProfile.name, {})),
        **{m: kw for m, kw in overrides.items() if m != CrossProfile.name},
    }
    tasks = [("main", m) for m in methods]
    if uplift:
        tasks.append(("split", CrossProfile.name))
    # slowest first, so the pool's last task is a short one
    cost = {
        "crossprofile": 0,
        "item-knn": 1,
        "item-knn-recent": 2,
        "biased-mf": 3,
        "seed-mean-embedding": 4,
    }
    tasks.sort(key=lambda t: (cost.get(t[1], 9), t[0] != "main"))
    if uplift and uplift_platform != ALL and uplift_platform not in data.platforms:
        raise ValueError(f"no platform {uplift_platform!r}: one of {data.platforms} or {ALL!r}")
    ctx = multiprocessing.get_context("fork")
    done = ctx.Array("q", len(tasks), lock=False)  # events replayed per task, shared by fork
    _STATE.update(
        data=data,
        emb=emb,
        settings=settings,
        params=params,
        uplift_platform=uplift_platform,
        tasks=tasks,
        done=done,
    )
    results: dict[tuple[str, str], Result] = {}
    bar = _ProgressBar(done, len(data) * len(tasks), len(tasks)) if progress else None
    try:
        if jobs > 1 and len(tasks) > 1:
            with ctx.Pool(min(jobs, len(tasks))) as pool:
                for task, res in pool.imap_unordered(_task, tasks):
                    results[task] = res
                    if log:
                        log(f"done: {task[1]} ({task[0]})")
        else:
            for task in tasks:
                results[task] = _task(task)[1]
                if log:
                    log(f"done: {task[1]} ({task[0]})")
    finally:
        _STATE.clear()
        if bar is not None:
            bar.close()

    cut = split_index(len(data), HEAD)
    report: dict[str, Any] = {
        "dataset": data.name,
        "sample": data.sample,
        "protocol": {
            "kind": "prequential (test, then learn), time-ordered",
            "k": K,
            "positive": "rating >= 4",
            "asked": "every positive event whose item the person has not consumed yet",
            "candidates": "items seen in the stream so far, minus the person's consumed items",
            "learned": "every event, with the stream's signal weight",
            "report_slice": f"last {round(100 * (1 - HEAD))}% of the time-ordered events "
            f"(events {cut}..{len(data) - 1}, from ts {data.ts[cut] if cut < len(data) else None})",
            "tuning": "crossprofile's parameters were chosen on the first 80% only",
            "coverage": "distinct items recommended / items in the sample's catalogue",
        },
        "config": {
            # the effective blend: the Signals defaults, the settings, then --params
            "crossprofile": Signals(
                **{**settings.signals_config(), **params[CrossProfile.name]}
            ).config(),
            "overrides": {m: kw for m, kw in params.items() if m != CrossProfile.name},
            "encoder_variant": settings.encoder_variant,
            "profile": {
                "max_interests": settings.max_interests,
                "half_life_days": settings.half_life_days,
            },
        },
        "methods": {
            m: summarise(data, results[("main", m)], head=HEAD)
            for m in methods
            if ("main", m) in results
        },
    }
    baselines = {m: r for m, r in report["methods"].items() if m != CrossProfile.name}
    if CrossProfile.name in report["methods"] and baselines:
        best = max(baselines, key=lambda m: baselines[m]["last_20"]["ndcg@10"])
        ours = report["methods"][CrossProfile.name]["last_20"]["ndcg@10"]
        theirs = baselines[best]["last_20"]["ndcg@10"]
        report["verdict"] = {
            "best_baseline": best,
            "best_baseline_ndcg@10_last_20": theirs,
            "crossprofile_ndcg@10_last_20": ours,
            "ratio": round(ours / theirs, 4) if theirs > 0 else None,
            "target": 1.2,
        }
    main = results.get(("main", CrossProfile.name))
    split = results.get(("split", CrossProfile.name))
    if main is not None and split is not None:
        report["cross_platform"] = uplift_report(data, main, split, uplift_platform)
    return report


def _slice(ranks: Sequence[int]) -> dict[str, Any]:
    t = Tally()
    for r in ranks:
        t.add(None if r < 0 else r)
    return t.report()


def uplift_report(data: EvalData, joined: Result, split: Result, platform: str) -> dict[str, Any]:
    """NDCG@10 of the same events of the persons whose accounts the demo joins: with the joins
    (the main run) vs every account on its own (the split run)."""
    with_join = dict(zip(joined.asked, joined.ranks, strict=True))
    events = [i for i in split.asked if i in with_join]
    without = dict(zip(split.asked, split.ranks, strict=True))
    cut = split_index(len(data), HEAD)
    # how many events each account had before each event: "new to this platform"
    before: dict[int, int] = {}
    prior_events = [0] * len(data)
    for i, acct in enumerate(data.account):
        prior_events[i] = before.get(acct, 0)
        before[acct] = prior_events[i] + 1

    def compare(sel: Callable[[int], bool]) -> dict[str, Any]:
        ev = [i for i in events if sel(i)]
        a = _slice([with_join[i] for i in ev])
        b = _slice([without[i] for i in ev])
        return {
            "events": len(ev),
            "joined": a,
            "not_joined": b,
            "uplift": round(a["ndcg@10"] / b["ndcg@10"] - 1, 4) if b["ndcg@10"] > 0 else None,
        }

    def on_platform(code: int) -> Callable[[int], bool]:
        return lambda i: data.platform[i] == code

    measured = [(c, p) for c, p in enumerate(data.platforms) if platform in (ALL, p)]
    per_platform = {p: compare(on_platform(c)) for c, p in measured}
    headline = compare(lambda i: True)
    return {
        "method": CrossProfile.name,
        "joined_persons": len(data.joined_users),
        "note": "same events, same persons; 'not_joined' replays the stream with every account "
        "as its own person (no link/identify joins); asked only on events of joined persons",
        "headline": {"platform": platform, **headline},
        "per_platform": per_platform,
        "last_20": compare(lambda i: i >= cut),
        "new_to_platform": {
            "rule": f"the account's first {COLD_ACCOUNT_EVENTS} events on that platform",
            **compare(lambda i: prior_events[i] < COLD_ACCOUNT_EVENTS),
        },
    }


class _ProgressBar:
    """A tqdm bar fed from the tasks' shared counters by a background thread."""

    def __init__(self, done: Any, total: int, tasks: int) -> None:
        import threading

        from tqdm import tqdm

        self._done = done
        self._bar = tqdm(
            total=total, unit="event", unit_scale=True, desc=f"replaying ({tasks} runs)"
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._update()

    def _update(self) -> None:
        self._bar.n = int(sum(self._done))
        self._bar.refresh()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        self._bar.close()


# --- plot ---------------------------------------------------------------------------------------


def write_plot(report: dict[str, Any], path: Path) -> None:
    """NDCG@10 per tenth of the stream, one line per method: SVG, or PNG (:mod:`.png`)."""
    series = {m: r["ndcg_over_time"] for m, r in report["methods"].items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".svg":
        path.write_text(_svg(series, report.get("dataset", "")), encoding="utf-8")
    else:
        from .png import line_chart

        path.write_bytes(
            line_chart(
                series,
                title=f"NDCG@10 over time - {report.get('dataset', '')}",
                x_label="tenth of the time-ordered stream (9-10: the report slice)",
            )
        )


def _svg(series: dict[str, list[float]], dataset: str) -> str:
    w, h, left, right, top, bottom = 760, 420, 60, 190, 40, 50
    top_y = max((v for s in series.values() for v in s), default=0.0) or 1.0
    top_y = math.ceil(top_y * 20) / 20
    n = max((len(s) for s in series.values()), default=1)

    def xy(i: int, v: float) -> tuple[float, float]:
        x = left + (w - left - right) * (i / max(n - 1, 1))
        y = h - bottom - (h - top - bottom) * (v / top_y)
        return round(x, 1), round(y, 1)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14">NDCG@10 over time — {dataset}</text>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>',
    ]
    for t in range(6):
        v = top_y * t / 5
        _, y = xy(0, v)
        out.append(f'<text x="{left - 8}" y="{y + 4}" text-anchor="end">{v:.3f}</text>')
    for i in range(n):
        x, _ = xy(i, 0)
        out.append(f'<text x="{x}" y="{h - bottom + 16}" text-anchor="middle">{i + 1}</text>')
    out.append(
        f'<text x="{(w - right + left) / 2}" y="{h - 12}" text-anchor="middle">'
        "tenth of the time-ordered stream</text>"
    )
    for k, (name, s) in enumerate(series.items()):
        c = COLOURS[k % len(COLOURS)]
        pts = " ".join(f"{x},{y}" for x, y in (xy(i, v) for i, v in enumerate(s)))
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{pts}"/>')
        ly = top + 18 * k
        out.append(
            f'<line x1="{w - right + 15}" y1="{ly}" x2="{w - right + 35}" y2="{ly}" '
            f'stroke="{c}" stroke-width="3"/>'
        )
        out.append(f'<text x="{w - right + 40}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


__all__ = ["evaluate", "uplift_report", "write_plot"]
