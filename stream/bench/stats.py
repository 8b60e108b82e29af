"""Rates, percentiles and targets of ``crossprofile bench pipeline`` (pure maths).

* :func:`sustained_rate` and :func:`interval_rates` — counts per second from timed samples.
* :func:`percentiles` — latency summaries (:func:`percentiles_by_slice`: over a phase's time);
  :func:`ratio`, :func:`backlog_target`.
* :func:`targets` — the issue's targets, each with its value and whether it is met.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

#: Targets of issue 3 (ratios within one run; latency on CPU; bytes per person).
TARGET_UNIQUE_VS_ENCODER: Final = 0.8
TARGET_ZIPF_VS_ENCODER: Final = 5.0
TARGET_P99_MS: Final = 250.0
TARGET_STATE_BYTES: Final = 4096

Sample = tuple[float, int]  # (monotonic seconds, cumulative count)


def sustained_rate(samples: Sequence[Sample], start: float, end: float) -> float | None:
    """Count per second between the first sample at/after ``start`` and the last at/before ``end``.

    >>> sustained_rate([(0.0, 0), (1.0, 50), (2.0, 150), (3.0, 250), (4.0, 300)], 1.0, 3.0)
    100.0
    >>> sustained_rate([(0.0, 0)], 0.0, 1.0) is None
    True
    """
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    return (c1 - c0) / (t1 - t0)


def interval_rates(samples: Sequence[Sample], start: float, end: float, step: float) -> list[float]:
    """Rates over consecutive ``step``-second slices of ``[start, end]`` (steadiness check).

    >>> interval_rates([(float(t), 10 * t) for t in range(11)], 0.0, 10.0, 5.0)
    [10.0, 10.0]
    """
    out: list[float] = []
    t = start
    while t + step <= end + 1e-9:
        r = sustained_rate(samples, t, t + step)
        if r is not None:
            out.append(r)
        t += step
    return out


def percentiles(values_ms: Sequence[float], qs: Sequence[float] = (50, 99)) -> dict[str, Any]:
    """``{"p50": …, "p99": …, "n": …}`` rounded to 0.1 ms (``None`` when there is no value).

    >>> percentiles([float(x) for x in range(1, 101)])
    {'p50': 50.5, 'p99': 99.0, 'n': 100}
    >>> percentiles([])
    {'p50': None, 'p99': None, 'n': 0}
    """
    out: dict[str, Any] = {}
    arr = np.asarray(values_ms, dtype=np.float64)
    for q in qs:
        out[f"p{q:g}"] = round(float(np.percentile(arr, q)), 1) if arr.size else None
    out["n"] = int(arr.size)
    return out


def percentiles_by_slice(
    times_s: Sequence[float], values_ms: Sequence[float], slice_s: float
) -> list[dict[str, Any]]:
    """:func:`percentiles` of ``values_ms`` in consecutive ``slice_s``-second slices of
    ``times_s`` (seconds from the phase's start, one per value), each with its ``from_s``: a tail
    spread over every slice is a saturated worker, one slice's is a hiccup.

    >>> first, second = percentiles_by_slice([0.5, 1.5, 2.5, 12], [10, 20, 30, 400], 10.0)
    >>> first
    {'from_s': 0.0, 'p50': 20.0, 'p99': 29.8, 'n': 3}
    >>> second
    {'from_s': 10.0, 'p50': 400.0, 'p99': 400.0, 'n': 1}
    >>> percentiles_by_slice([], [], 10.0)
    []
    """
    if slice_s <= 0:
        raise ValueError("slice_s must be > 0")
    slices: dict[int, list[float]] = {}
    for t, v in zip(times_s, values_ms, strict=True):
        slices.setdefault(int(t // slice_s), []).append(v)
    return [{"from_s": k * slice_s, **percentiles(slices[k])} for k in sorted(slices)]


def quantile_interval(
    values: Sequence[float], q: float, confidence: float = 0.95
) -> tuple[float | None, float | None]:
    """A distribution-free confidence interval for the ``q``-quantile (0 < q < 1) of what
    ``values`` sample: the order statistics ``X(l) ≤ X(u)`` with ``P(X(l) ≤ ξ_q ≤ X(u)) ≥
    confidence``, from the binomial law of how many samples fall below ξ_q. A bound the sample
    is too small to give is None (a 95 % interval of p99 needs ≥ 368 values for its upper end).

    With 600 latencies, the p99's interval runs from the 12th-largest to the 2nd-largest value:
    a run's p99 is a noisy figure, and a target near it is met or missed by chance.

    >>> quantile_interval([float(x) for x in range(1, 1001)], 0.5)
    (469.0, 532.0)
    >>> quantile_interval([float(x) for x in range(1, 601)], 0.99)
    (589.0, 599.0)
    >>> quantile_interval([1.0, 2.0, 3.0], 0.99)  # too few values for an upper bound
    (2.0, None)
    """
    if not 0.0 < q < 1.0:
        raise ValueError("q must be inside (0, 1)")
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = int(x.size)
    if n == 0:
        return None, None
    k = np.arange(n + 1, dtype=np.float64)
    log_pmf = (
        math.lgamma(n + 1)
        - np.array([math.lgamma(v + 1) + math.lgamma(n - v + 1) for v in k])
        + k * math.log(q)
        + (n - k) * math.log1p(-q)
    )
    cdf = np.cumsum(np.exp(log_pmf))[:n]  # cdf[j] = P(fewer than j + 1 values below ξ_q)
    tail = (1.0 - confidence) / 2.0
    low = np.nonzero(cdf <= tail)[0]  # X(j + 1) ≤ ξ_q with probability 1 - cdf[j]
    high = np.nonzero(cdf >= 1.0 - tail)[0]  # X(j + 1) ≥ ξ_q with probability cdf[j]
    return (
        float(x[low[-1]]) if low.size else None,
        float(x[high[0]]) if high.size else None,
    )


def backlog_target(rate: float | None, seconds: float, floor: int) -> int:
    """Events to keep queued ahead of the worker: ``seconds`` of work at ``rate``, ≥ ``floor``.

    >>> [backlog_target(r, 4.0, 100) for r in (None, 10.0, 80.0)]
    [100, 100, 320]
    """
    return max(floor, int(seconds * rate)) if rate else floor


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` rounded to 3 places, or None when either is missing or ``b`` is 0."""
    return round(a / b, 3) if a is not None and b else None


def targets(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's pipeline targets, each with its value and ``met``."""
    ratios, lat = report["ratios"], report["latency"]["latency_ms"]["p99"]
    state = max(v["codec_bytes"] for v in report["state_bytes_per_person"].values())

    def entry(value: float | None, target: float, higher: bool) -> dict[str, Any]:
        met = value is not None and (value >= target if higher else value < target)
        return {"value": value, "target": target, "met": met}

    return {
        "pipeline_unique_vs_encoder_ge": entry(
            ratios["pipeline_unique_vs_encoder"], TARGET_UNIQUE_VS_ENCODER, True
        ),
        "pipeline_zipf_vs_encoder_ge": entry(
            ratios["pipeline_zipf_vs_encoder"], TARGET_ZIPF_VS_ENCODER, True
        ),
        "p99_latency_ms_lt": {
            **entry(lat, TARGET_P99_MS, False),
            # met / missed beyond this run's sampling noise, or None when the interval spans it
            "clear": _clear(report["latency"].get("latency_p99_ci95_ms"), TARGET_P99_MS),
        },
        "state_bytes_per_person_le": {
            "value": state,
            "target": TARGET_STATE_BYTES,
            "met": state <= TARGET_STATE_BYTES,
        },
    }


def _clear(interval: Sequence[float | None] | None, target: float) -> bool | None:
    """True when the whole interval is under ``target``, False when all of it is at or above
    it, None when it spans the target (or is unknown)."""
    lo, hi = interval if interval else (None, None)
    if hi is not None and hi < target:
        return True
    if lo is not None and lo >= target:
        return False
    return None


__all__ = [
    "TARGET_P99_MS",
    "TARGET_STATE_BYTES",
    "TARGET_UNIQUE_VS_ENCODER",
    "TARGET_ZIPF_VS_ENCODER",
    "Sample",
    "backlog_target",
    "interval_rates",
    "percentiles",
    "quantile_interval",
    "ratio",
    "sustained_rate",
    "targets",
]
