"""HTTP views on the worker's Faust web server: health, readiness, Prometheus metrics, stats,
per-person read views, and the ops page (``/ops``, its data ``/ops/data``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

import faust
from faust.web import Request, Response, View

from .faust_compat import consumer_counters
from .metrics import CONTENT_TYPE, WorkerMetrics, install_metrics
from .ops import CounterHistory, LagHistory, ops_page, snapshot


def stats(app: faust.App) -> dict[str, Any]:
    rt = app.runtime  # type: ignore[attr-defined]
    c = rt.counters
    identity = cast(Mapping[str, Any], app.tables["identity"])
    profiles = cast(Mapping[str, Any], app.tables["profiles"])
    persons = sum(1 for k in identity if str(k).startswith("P:"))
    accounts = sum(1 for k in identity if str(k).startswith("a:"))
    return {
        "events_in": c.events_in,
        "events_rejected": dict(c.events_rejected),
        "duplicates": c.duplicates,
        "left_to_redelivery": c.left_to_redelivery,
        **consumer_counters(app),
        "recommendations_out": c.recommendations_out,
        "merges": c.merges,
        "identity_inline": c.identity_inline,
        "profile_inline": c.profile_inline,
        "inline_sent_on": c.inline_sent_on,
        "erased": c.erased,
        "persons": persons,
        "accounts": accounts,
        "profiles": len(profiles),
        "items": len(rt.index),
        "index": {
            "graph": rt.index.graph_state(),
            "hnsw_answers": rt.index.ann_answers,
            "hnsw_fallbacks": rt.index.ann_fallbacks,
        },
        "covisits": {
            "applied": c.covisits_applied,
            "waiting": len(rt.unplaced_covisits),
            "replays_skipped": rt.signals.replays_skipped,
        },
        "encoder": {
            "provider": rt.encoder.provider,
            "batches": c.encoder_batches,
            "texts": c.encoder_texts,
            "seconds": round(c.encoder_seconds, 3),
            "cache_hits": rt.encoder.cache_hits,
            "cache_misses": rt.encoder.cache_misses,
            "item_vectors_shared": c.item_vectors_shared,
        },
        "event_loop_lag": rt.metrics.loop_lag_summary() if rt.metrics is not None else None,
        "gc": rt.metrics.gc.summary() if rt.metrics is not None else None,
        "event_loop": rt.metrics.loop_busy.summary() if rt.metrics is not None else None,
    }


def linked_accounts(app: faust.App, person_id: str) -> list[str] | None:
    """The person's accounts, when cheap: from the identity table if this worker holds it (it
    has one partition, so one worker does), else from the latest recommendation message sent
    for the person; None when neither knows."""
    rec = cast(Mapping[str, Any], app.tables["identity"]).get("P:" + person_id)
    if isinstance(rec, Mapping) and rec.get("accounts"):
        return [str(a) for a in rec["accounts"]]
    latest = app.runtime.latest_recs.get(person_id)  # type: ignore[attr-defined]
    if latest is not None and latest.get("accounts"):
        return [str(a) for a in latest["accounts"]]
    return None


def counter_sample(app: faust.App) -> dict[str, int]:
    """The counters the ops page turns into rates."""
    c = app.runtime.counters  # type: ignore[attr-defined]
    return {
        "events_in": c.events_in,
        "recommendations_out": c.recommendations_out,
        "events_rejected": sum(c.events_rejected.values()),
    }


def ops_data(
    app: faust.App, metrics: WorkerMetrics, history: LagHistory, counters: CounterHistory
) -> dict[str, Any]:
    """``/ops/data``: what the ops page draws (one worker's view)."""
    rt = app.runtime  # type: ignore[attr-defined]
    history.record(metrics.lag)
    _, ready = metrics.readiness()
    now = time.monotonic()
    return snapshot(
        app_id=rt.settings.app_id,
        stats=stats(app),
        ready=ready,
        lag=metrics.lag,
        lag_age_s=None if metrics.lag_read_at is None else now - metrics.lag_read_at,
        lag_errors=metrics.lag_errors,
        stalled=metrics.stalls.stalled(),
        history=history,
        counter_history=counters,
        latest=rt.latest_recs,
        now_ms=int(time.time() * 1000),
        monotonic_s=now,
    )


def install_views(app: faust.App) -> None:
    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    metrics = install_metrics(app)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    @app.page("/ready")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            ready, detail = metrics.readiness()
            return self.json(detail, status=200 if ready else 503)

    @app.page("/stats")
    class Stats(View):
        async def get(self, request: Request) -> Response:
            return self.json(stats(app))

    @app.page("/persons/{person_id}/profile")
    class PersonProfile(View):
        async def get(self, request: Request, person_id: str) -> Response:
            prof = cast(Mapping[str, Any], app.tables["profiles"]).get(person_id)
            if prof is None:
                return self.json({"error": "unknown person on this worker"}, status=404)
            return self.json(prof.to_json(person_id, linked_accounts(app, person_id) or ()))

    @app.page("/persons/{person_id}/recommendations")
    class PersonRecommendations(View):
        async def get(self, request: Request, person_id: str) -> Response:
            latest = app.runtime.latest_recs  # type: ignore[attr-defined]
            if cast(Mapping[str, Any], app.tables["profiles"]).get(person_id) is None:
                latest.pop(person_id)  # moved to another worker, merged away or erased
                return self.json({"error": "unknown person on this worker"}, status=404)
            msg = latest.get(person_id)
            if msg is None:
                return self.json(
                    {"error": "no recommendation sent for this person since this worker started"},
                    status=404,
                )
            return self.json(msg)

    history, counters = LagHistory(), CounterHistory()
    lag_refresh_s = float(app.runtime.settings.lag_refresh_s)  # type: ignore[attr-defined]

    @app.timer(interval=max(0.5, min(2.0, lag_refresh_s)))
    async def sample_ops_history() -> None:
        """The ops page's history: lag readings (when new) and the event counters."""
        history.record(metrics.lag)
        counters.record(time.time(), counter_sample(app))

    page = ops_page().decode("utf-8")

    @app.page("/ops")
    class OpsPage(View):
        async def get(self, request: Request) -> Response:
            return self.html(page, headers={"Cache-Control": "no-cache"})  # text/html; utf-8

    @app.page("/ops/data")
    class OpsData(View):
        async def get(self, request: Request) -> Response:
            return self.json(ops_data(app, metrics, history, counters))


__all__ = ["counter_sample", "install_views", "linked_accounts", "ops_data", "stats"]
