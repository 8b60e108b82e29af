"""``crossprofile bench pipeline --quick`` end to end: the real broker and a real worker process.

Checks the report's shape and that its counts agree with each other — never its speeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stream.bench.pipeline_bench import main

pytestmark = pytest.mark.integration

DATA_DIR = Path(__file__).resolve().parents[2] / ".data"


def _quick_report(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *flags: str
) -> dict[str, Any]:
    """``bench pipeline --quick`` on the test broker, two partitions; the JSON report."""
    monkeypatch.setenv("CROSSPROFILE_BROKER", bootstrap)
    monkeypatch.setenv("CROSSPROFILE_DATA_DIR", str(DATA_DIR))
    monkeypatch.setenv("CROSSPROFILE_PARTITIONS", "2")
    out = tmp_path / "pipeline.json"
    assert main(["--quick", "--quiet", *flags, "--json", str(out)]) == 0
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_quick_run_reports_consistent_counts(
    bootstrap: str, encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = _quick_report(bootstrap, tmp_path, monkeypatch, "--zipf-prewarm", "50")

    assert report["quick"] is True
    assert report["settings"]["encoder_batch_size"] >= 1
    assert "encoder_max_wait_ms" in report["settings"]
    assert report["encoder_raw"]["sentences_per_s"] > 0
    for name in ("unique", "zipf"):
        phase = report["pipeline"][name]
        assert phase["drained"] is True
        assert phase["events_produced"] > 0
        assert phase["events_learned"] == phase["events_produced"]
        assert phase["events_per_s"] is not None
        assert set(phase["where_time_goes"]["cpu_cores_used"]) == {"worker", "broker", "bench"}
    latency = report["latency"]
    assert latency["drained"] is True
    assert latency["events_learned"] == latency["events_produced"] > 0
    assert latency["latency_ms"]["n"] + latency["latency_deferred_ms"]["n"] > 0
    # every directly answered event is found at each hop (internal topics read back)
    assert latency["by_hop"]["events"] == latency["latency_ms"]["n"]
    # the slices hold every timed latency once
    assert sum(q["n"] for q in latency["latency_by_slice_ms"]) == latency["latency_ms"]["n"]
    assert latency["by_hop"]["hops_ms"]["identity_to_recommendation"]["p50"] > 0
    assert latency["where_time_goes"]["event_loop_lag_ms"]["readings"] > 0
    # the worker timed its garbage collections and froze its startup objects (the default)
    gc_pauses = report["pipeline"]["unique"]["where_time_goes"]["gc_pauses"]
    assert gc_pauses["frozen_objects"] > 10_000 and gc_pauses["collections"]["0"] > 0
    # the worker timed its event loop: busy some of the phase, never more than all of it
    busy = report["pipeline"]["unique"]["where_time_goes"]["event_loop_busy_share"]
    assert 0 < busy <= 1.05
    assert set(report["ratios"]) == {"pipeline_unique_vs_encoder", "pipeline_zipf_vs_encoder"}
    assert set(report["state_bytes_per_person"]) == {"10", "100", "1000"}

    totals = report["totals"]
    produced = sum(report["pipeline"][n]["events_produced"] for n in ("unique", "zipf"))
    produced += latency["events_produced"]
    # --zipf-prewarm: 50 Zipf events learned, unmeasured, before the Zipf phase
    assert report["zipf_prewarm"]["events_produced"] == report["zipf"]["prewarm_events"] == 50
    assert report["zipf_prewarm"]["drained"] is True
    assert 0 < report["zipf"]["expected_first_seen_share"] <= 1
    produced += report["zipf_prewarm"]["events_produced"]
    assert totals["events_produced"] == produced
    assert totals["events_learned"] == produced  # one profile changelog record per event
    assert totals["worker_events_in"] == produced  # the worker consumed every event
    assert totals["worker_rejected"] == 0 and totals["worker_duplicates"] == 0
    assert totals["recommendations_read"] > 0

    assert set(report["targets"]) == {
        "pipeline_unique_vs_encoder_ge",
        "pipeline_zipf_vs_encoder_ge",
        "p99_latency_ms_lt",
        "state_bytes_per_person_le",
    }
    assert all(isinstance(t["met"], bool) for t in report["targets"].values())


def test_quick_run_with_a_group_of_two_workers(
    bootstrap: str, encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--workers 2``: both join one group, share the partitions, and the report sums them."""
    report = _quick_report(bootstrap, tmp_path, monkeypatch, "--workers", "2")

    assert report["options"]["workers"] == 2
    totals = report["totals"]
    assert totals["events_learned"] >= totals["events_produced"] > 0  # nothing lost
    # at-least-once: a rebalance as the second worker joins may deliver an event twice
    assert totals["worker_events_in"] >= totals["events_produced"]
    for name in ("unique", "zipf"):
        assert report["pipeline"][name]["drained"] is True
        cpu = report["pipeline"][name]["where_time_goes"]["cpu_cores_used"]
        assert {"worker", "worker0", "worker1", "broker", "bench"} == set(cpu)
    # both workers did profile work: each learned part of the events (summed /stats counters)
    per_worker = report["worker_stats_per_process"]
    assert len(per_worker) == 2 and all(s["profiles"] > 0 for s in per_worker), per_worker
    assert totals["profiles"] == sum(s["profiles"] for s in per_worker)
