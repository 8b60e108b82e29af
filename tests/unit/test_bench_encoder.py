"""``crossprofile bench encoder`` in its --quick mode: structure of the report, never speed.

The benchmark runs PyTorch and the ONNX encoder for real (a few dozen texts, one repeat, two seed
texts), so it needs the exported encoder (``.data/encoder``, exported on first use) and torch.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.bench import cli as bench_cli
from stream.bench.encoder_bench import format_table, parity
from stream.bench.texts import event_texts, generate, has_cjk, labelled_texts
from stream.settings import Settings

DATA_DIR = Path(__file__).resolve().parents[2] / ".data"


# --- corpus --------------------------------------------------------------------------------------


def test_texts_are_deterministic_distinct_and_prefix_stable() -> None:
    a = event_texts(500)
    assert a == event_texts(500)
    assert len(set(a)) == 500
    assert event_texts(120) == a[:120]
    assert event_texts(50, seed=1) != event_texts(50, seed=2)
    kinds = {kind for kind, _text in generate(500)}
    assert kinds == {"title", "review", "query", "post", "chinese", "mixed"}
    assert any(has_cjk(t) for t in a)


def test_token_filter_keeps_the_range() -> None:
    def count(texts: Any) -> list[int]:  # a crude stand-in for a tokenizer: words + 2
        return [len(t.split()) + 2 for t in texts]

    pairs = labelled_texts(200, count_tokens=count, min_tokens=6, max_tokens=12)
    assert len(pairs) == 200
    assert all(6 <= n <= 12 for n in count([t for _k, t in pairs]))
    with pytest.raises(ValueError):
        labelled_texts(5, count_tokens=count, min_tokens=9, max_tokens=3)


# --- parity --------------------------------------------------------------------------------------


def test_parity_of_identical_and_perturbed_embeddings() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(40, 16)).astype(np.float32)
    same = parity(ref * 3.0, ref)  # scale does not matter: cosines
    assert same["min_cosine"] == pytest.approx(1.0)
    assert same["knn_overlap_at_10"] == pytest.approx(1.0)
    noisy = parity(ref + rng.normal(scale=0.5, size=ref.shape).astype(np.float32), ref)
    assert 0.0 <= noisy["min_cosine"] <= noisy["mean_cosine"] < 1.0
    assert 0.0 <= noisy["knn_overlap_at_10"] < 1.0


# --- the quick benchmark -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if importlib.util.find_spec("torch") is None:
        pytest.skip("the benchmark runs PyTorch: pip install '.[export]'")
    from export.encoder_export import ensure_encoder

    ensure_encoder(Settings(data_dir=DATA_DIR, encoder_variant="fp32"), progress=False)
    out = tmp_path_factory.mktemp("bench")
    mp = pytest.MonkeyPatch()
    mp.setenv("CROSSPROFILE_DATA_DIR", str(DATA_DIR))
    try:
        rc = bench_cli.main(
            [
                "encoder",
                "--quick",
                "--quiet",
                "--json",
                str(out / "report.json"),
                "--plot",
                str(out / "plot.png"),
            ]
        )
    finally:
        mp.undo()
    assert rc == 0
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return report


def test_report_has_every_config(quick_report: dict[str, Any]) -> None:
    names = {r["name"] for r in quick_report["results"]}
    assert {"seed", "torch b1", "torch unsorted b8", "torch sorted b8"} <= names
    assert {"onnx fp32 b1", "onnx fp32 b8"} <= names
    assert quick_report["quick"] is True
    assert quick_report["repeats"] == 1
    methods = {r["method"] for r in quick_report["results"]}
    assert methods == {"seed", "torch-single", "torch-batched", "onnx", "onnx-arrival"}
    # the worker's way: calls of CROSSPROFILE_ENCODER_BATCH_SIZE texts in arrival order, cut into
    # length groups or kept whole
    arrival = {r["name"]: r for r in quick_report["results"] if r["method"] == "onnx-arrival"}
    assert set(arrival) == {"onnx fp32 arrival b32", "onnx fp32 arrival-whole b32"}
    assert all(not r["sorted"] and r["batch_size"] == 32 for r in arrival.values())


def test_results_are_complete(quick_report: dict[str, Any]) -> None:
    for r in quick_report["results"]:
        assert r["repeats"] == len(r["seconds"]) == len(r["sentences_per_s"]) == 1
        assert r["sentences_per_s_median"] > 0  # a rate was measured; no claim on its size
        assert r["texts"] >= 1
        par = r["parity"]
        for key in ("min_cosine", "p01_cosine", "mean_cosine"):
            assert 0.0 <= par[key] <= 1.0, (r["name"], key)
        if r["method"] != "seed":
            assert 0.0 <= par["knn_overlap_at_10"] <= 1.0
        if r["variant"] == "fp32":
            assert par["min_cosine"] >= 0.999, r["name"]


def test_summary_and_ratios(quick_report: dict[str, Any]) -> None:
    rep = quick_report
    assert rep["seed_subsample"]["texts"] == 2
    assert rep["seed_subsample"]["of"] == rep["corpus"]["texts"] == 32
    assert rep["corpus"]["distinct"] == 32
    assert 10 <= rep["corpus"]["tokens"]["min"] <= rep["corpus"]["tokens"]["max"] <= 40
    assert rep["best_torch_batched"]["name"] == "torch sorted b8"
    assert rep["best"]["name"].startswith("onnx ")
    for key in (
        "ratio_best_vs_seed",
        "ratio_best_vs_torch_batched",
        "ratio_best_at_parity_vs_seed",
        "ratio_best_at_parity_vs_torch_batched",
    ):
        assert isinstance(rep[key], float) and rep[key] > 0, key
    assert set(rep["targets"]) >= {"vs_seed", "vs_torch_batched", "min_cosine", "met_by_best"}
    assert rep["machine"]["torch_threads"] >= 1
    assert "onnxruntime" in rep["machine"]
    table = format_table(rep)
    assert "torch sorted b8" in table and "best_at_parity" in table


def test_bench_cli_rejects_unknown_benchmarks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench_cli.main(["frobnicate"])
    assert "usage: crossprofile bench" in capsys.readouterr().err


def test_torch_device_follows_the_provider_unless_named() -> None:
    from stream.bench.encoder_bench import build_parser, options

    parser = build_parser()

    def device(*argv: str) -> str:
        return options(parser.parse_args(list(argv)), parser).torch_device

    assert device() == "cpu"
    assert device("--provider", "cuda") == "cuda"
    assert device("--provider", "cuda", "--torch-device", "cpu") == "cpu"
    assert device("--torch-device", "cuda") == "cuda"


def test_plot_keeps_fp16_pytorch_apart_and_names_the_gpu() -> None:
    from stream.bench.plot import _series, render

    def row(method: str, variant: str, bs: int, rate: float, *, engine: str = "torch") -> dict:
        return {
            "method": method, "engine": engine, "variant": variant, "batch_size": bs,
            "sorted": True, "sentences_per_s_median": rate,
        }  # fmt: skip

    report = {
        "machine": {"gpu": "NVIDIA H100 80GB HBM3", "cpu": {"model": "Xeon"}},
        "results": [
            row("seed", "fp32", 1, 180.0),
            row("torch-single", "fp32", 1, 250.0),
            row("torch-batched", "fp32", 512, 18000.0),
            row("torch-batched", "fp16", 512, 22000.0),
            row("onnx", "fp16", 512, 45000.0, engine="onnxruntime"),
            row("onnx-arrival", "fp32", 32, 130.0, engine="onnxruntime"),  # a point, not a line
        ],
    }
    series, seed = _series(report)
    assert seed == 180.0
    assert series["torch sorted"] == [(1, 250.0), (512, 18000.0)]
    assert series["torch fp16 sorted"] == [(512, 22000.0)]
    assert series["onnx fp16"] == [(512, 45000.0)]
    assert "onnx fp32" not in series  # the arrival-order runs stay off the batch-size chart
    assert render(report).shape[2] == 3
