"""HTTP views on the worker's Faust web server: health, readiness, Prometheus metrics, stats,
per-person read views."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import faust
from faust.web import Request, Response, View

from .metrics import CONTENT_TYPE, install_metrics


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
        "recommendations_out": c.recommendations_out,
        "merges": c.merges,
        "erased": c.erased,
        "persons": persons,
        "accounts": accounts,
        "profiles": len(profiles),
        "items": len(rt.index),
        "encoder": {
            "provider": rt.encoder.provider,
            "batches": c.encoder_batches,
            "texts": c.encoder_texts,
            "seconds": round(c.encoder_seconds, 3),
            "cache_hits": rt.encoder.cache_hits,
            "cache_misses": rt.encoder.cache_misses,
        },
    }


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
            return self.json(prof.to_json(person_id))


__all__ = ["install_views", "stats"]
