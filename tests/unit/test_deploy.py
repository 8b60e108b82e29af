"""``deploy/prometheus`` and ``deploy/grafana``: they parse, they name only metrics a worker
exports, and (when Debian's ``promtool`` is installed) Prometheus accepts them and the alert
rules' unit tests pass."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from stream.app import Counters
from stream.lag import build_group_lag
from stream.metrics import WorkerMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "crossprofile.json"
PROMTOOL = shutil.which("promtool")
#: Grafana's variables, replaced by values PromQL can parse.
GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$job": "crossprofile",
    "$instance": ".*",
    "$group": ".*",
}
_METRIC = re.compile(r"\b((?:kafka|crossprofile)_[a-z_]+|up)\b")


class _Tables(dict[str, Any]):
    recovery = SimpleNamespace(
        completed=SimpleNamespace(is_set=lambda: True),
        in_recovery=False,
        active_remaining_total=lambda: 0,
        standby_remaining_total=lambda: 0,
    )


def exported_names() -> set[str]:
    """Every sample name a worker's /metrics can carry (one of each observation made)."""
    counters = Counters(events_in=3, events_rejected={"invalid_json": 1})
    app = SimpleNamespace(
        runtime=SimpleNamespace(
            counters=counters,
            encoder=SimpleNamespace(cache_hits=1, cache_misses=2),
            index=[],
        ),
        tables=_Tables(identity={}, profiles={}),
    )
    m = WorkerMetrics("g", app=app)  # type: ignore[arg-type]
    m.record_lag(
        build_group_lag("g", {("t", 0): 5}, {("t", 0): 2}),
        now=0.0,
    )
    m.observe_encoder(4, 0.01)
    m.gc("start", {"generation": 2})  # one timed full collection
    m.gc("stop", {"generation": 2})
    loop = asyncio.new_event_loop()
    m.loop_busy.install(loop)  # as the lag probe does on the worker's loop
    loop.close()
    for deferred in (False, True):
        m.event_received("e", now=0.0)
        m.recommendation_sent("e", deferred=deferred, now=0.1)
    names = {"up"}
    for family in text_string_to_metric_families(m.exposition().decode()):
        names.update(s.name for s in family.samples)
    return names


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    out = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert out
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def substitute(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, expr
    return expr


def test_files_parse_and_reference_each_other() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = [j["job_name"] for j in config["scrape_configs"]]
    assert jobs == ["crossprofile"]
    assert config["scrape_configs"][0]["metrics_path"] == "/metrics"
    names = {r["alert"] for r in alert_rules()}
    for wanted in (
        "CrossprofileLagGrowing",
        "CrossprofilePartitionStalled",
        "CrossprofileDLQRate",
        "CrossprofileWorkerDown",
        "CrossprofileNotReady",
    ):
        assert wanted in names
    assert all(r["annotations"]["summary"] for r in alert_rules())
    yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    board = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"] for p in board["panels"])
    for wanted in (
        "Lag per partition",
        "Lag per topic",
        "Events in",
        "Encoder batch size",
        "Encoder batch latency",
        "Event → recommendation latency",
        "Profiles held",
        "Persons / accounts / items",
    ):
        assert wanted in titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_only_exported_metrics_are_queried() -> None:
    exported = exported_names()
    exprs = dashboard_exprs() + [r["expr"] for r in alert_rules()]
    used = {name for expr in exprs for name in _METRIC.findall(expr)}
    assert used - exported == set(), f"not exported by a worker: {sorted(used - exported)}"
    # the headline series are all used
    assert {
        "kafka_consumergroup_lag",
        "kafka_consumergroup_lag_sum",
        "crossprofile_encoder_batch_size_bucket",
        "crossprofile_event_to_recommendation_seconds_bucket",
    } <= used


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_config_rules_and_dashboard_queries(tmp_path: Path) -> None:
    assert PROMTOOL is not None

    def promtool(*args: str) -> None:
        proc = subprocess.run(
            [PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 0, f"promtool {args}: {proc.stdout}{proc.stderr}"

    promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    # the dashboard's queries, as recording rules: promtool parses each one
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substitute(e)}
        for i, e in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", str(path))
