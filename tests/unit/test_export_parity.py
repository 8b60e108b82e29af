"""The exported encoder's manifest: parity with PyTorch, provenance and checksums."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from export.encoder_export import FP32_MIN_COSINE, ensure_encoder, parity_corpus, read_manifest
from stream.settings import Settings

DATA_DIR = Path(__file__).resolve().parents[2] / ".data"


@pytest.fixture(scope="session")
def manifest() -> dict[str, Any]:
    settings = Settings(data_dir=DATA_DIR, encoder_variant="fp32")
    if read_manifest(settings.encoder_dir) is None and importlib.util.find_spec("torch") is None:
        pytest.skip("no exported encoder and no torch to export one: pip install '.[export]'")
    data = read_manifest(ensure_encoder(settings, progress=False))
    assert data is not None
    return data


def test_fp32_parity(manifest: dict[str, Any]) -> None:
    parity = manifest["variants"]["fp32"]["parity"]
    if parity is None:
        pytest.skip("the encoder was exported with --no-parity")
    assert parity["texts"] >= 200
    assert parity["min_cosine"] >= FP32_MIN_COSINE
    assert parity["mean_cosine"] >= parity["min_cosine"]


def test_quantised_variants_recorded(manifest: dict[str, Any]) -> None:
    for name, info in manifest["variants"].items():
        floor = manifest["parity_threshold"][name]
        if info["parity"] is not None:
            assert info["parity"]["min_cosine"] >= floor, name
    assert set(manifest["variants"]).isdisjoint(manifest["skipped"])


def test_manifest_provenance(manifest: dict[str, Any]) -> None:
    assert manifest["dim"] == 384
    assert manifest["inputs"] == ["input_ids", "attention_mask"]
    assert manifest["output"] == "embeddings"
    assert isinstance(manifest["opset"], int)
    for package in ("torch", "onnx", "onnxruntime", "transformers"):
        assert manifest["versions"][package]
    assert manifest["export_seconds"] > 0


def test_checksums_match_files(manifest: dict[str, Any]) -> None:
    encoder_dir = DATA_DIR / "encoder"
    assert "model.onnx" in manifest["files"] and "tokenizer.json" in manifest["files"]
    for name, info in manifest["files"].items():
        data = (encoder_dir / name).read_bytes()
        assert len(data) == info["bytes"], name
        assert hashlib.sha256(data).hexdigest() == info["sha256"], name


def test_parity_corpus_is_varied_and_deterministic() -> None:
    texts = parity_corpus(200)
    assert texts == parity_corpus(200)
    assert len(set(texts)) > 150
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in texts)  # Chinese
    assert "" in texts and max(map(len, texts)) > 2000  # empty and far past the token limit


def test_cli_help_and_existing_export(
    manifest: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from export.encoder_export import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--variants" in capsys.readouterr().out
    assert main(["--out", str(DATA_DIR / "encoder")]) == 0  # already there, no --force: no-op
    assert "--force" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--variants", "fp64"])


def test_missing_torch_gives_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from export.encoder_export import ExportError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(ExportError, match=r"pip install '\.\[export\]'"):
        ensure_encoder(Settings(data_dir=tmp_path), progress=False)
    assert not (tmp_path / "encoder").exists()
