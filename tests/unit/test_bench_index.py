"""``crossprofile bench index`` end to end on small synthetic catalogues (no encoder, no timing
asserted: only that both paths ran, agree, and the report says so)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.bench import index_bench
from stream.bench.cli import main as bench_main


def test_bench_index_writes_a_report_where_both_paths_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "index.json"
    argv = ["index", "--synthetic", "--sizes", "400,1500", "--histories", "2,30", "--profiles",
            "8", "--repeats", "1", "--texts", "1500", "--json", str(out)]  # fmt: skip
    assert bench_main(argv) == 0
    report = json.loads(out.read_text())
    assert [(r["items"], r["history"]) for r in report["rows"]] == [
        (400, 2), (400, 30), (1500, 2), (1500, 30)
    ]  # fmt: skip
    for row in report["rows"]:
        assert row["exact_ms"] > 0 and row["hnsw_ms"] > 0 and row["hnsw_insert_ms"] > 0
        assert row["overlap_at_10_mean"] >= 0.9, row
        assert 0 <= row["fallback_share"] <= 1
        build = row["graph_build"]  # 400 items: built at once; 1,500: in the background
        assert build["threshold"] == row["items"]
        assert build["built_at_threshold"]["state"] == "ready"
        assert build["every_item_inserted"]["caller_ms"] > 0
    table = capsys.readouterr().out
    assert "overlap@10" in table and "1500" in table and "every item inserted" in table


def test_bench_index_rejects_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        index_bench.main(["--sizes", "big"])
    assert exc.value.code == 2
    assert "comma-separated whole numbers" in capsys.readouterr().err
