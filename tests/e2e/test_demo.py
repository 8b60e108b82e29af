"""The `make run` path end to end: `crossprofile demo` on its own embedded broker and worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_demo_replays_movielens_and_summarises(tmp_path: Path, encoder_dir: Path) -> None:
    summary_path = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSPROFILE_")}
    env.update(CROSSPROFILE_DATA_DIR=str(ROOT / ".data"), CROSSPROFILE_TOPIC_PREFIX="e2e")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "demo",
            "--limit",
            "400",
            "--rate",
            "0",
            "--no-live",
            "--summary",
            str(summary_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("summary: ")
    summary = json.loads(last.removeprefix("summary: "))
    assert summary == json.loads(summary_path.read_text())
    assert summary["events_sent"] >= 400
    assert summary["recommendations"] > 0
    assert summary["persons"] < summary["accounts"], "identity resolution joined no accounts"
    assert summary["events_rejected"] > 0
    assert summary["events_rejected"] == sum(summary["rejected_by_reason"].values())
    assert summary["latency_ms"]["p50"] is not None
    assert "because" not in proc.stderr  # the view goes to stdout
    assert " — " in proc.stdout, "the live view shows items with their reasons"
