"""``crossprofile bench encoder``: the seed method, batched PyTorch and our ONNX path, one run.

Every method encodes the *same* texts (:func:`stream.bench.texts.event_texts`: distinct product
titles, reviews, search queries, posts, Chinese and mixed text of 10–40 tokens) in the same
process. Shared machines are noisy, so the configs are interleaved finely: a repeat is a series
of rounds, and in round r every config encodes slice r of the corpus (256 texts; in global length
order for the sorted configs, in corpus order for the others; a multiple of every batch size, so
the batches are exactly those of one call on the whole corpus). A burst of load from a neighbour
thus hits all configs alike. A config's time for a repeat is the sum over its slices; each figure
is the median over the repeats. Timings cover everything from texts to normalised embeddings
(tokenising, sorting within the call, padding, the model, pooling).

Configs:

* ``seed`` — what the project started with: Hugging Face ``AutoModel`` (``BertModel``) in
  PyTorch, one text at a time, padded to 512 tokens. Its cost per text does not depend on the text
  (everything is 512 tokens), so it runs on the first ``--seed-texts`` texts only (default 60).
* ``torch b1`` — PyTorch, one text at a time, no padding: the **reference** of every parity
  figure (PyTorch fp32, exact sequence length).
* ``torch unsorted bN`` / ``torch sorted bN`` — PyTorch batches of N with dynamic padding (to the
  longest text of the batch), in corpus order or sorted by token length.
* ``onnx fp32 bN`` / ``onnx int8 bN`` — :class:`stream.encoder.Encoder` (length-sorted batches of
  N) over the exported fused fp32 graph and its dynamic int8 quantisation.
* ``onnx fp32 arrival bN`` / ``onnx fp32 arrival-whole bN`` — the encoder as a worker calls it:
  one call per N texts in corpus order (N = ``CROSSPROFILE_ENCODER_BATCH_SIZE``), each batch
  sorted within itself and cut into runs of similar length, or kept whole (CPU only; on CUDA a
  batch is kept whole anyway). Against ``torch unsorted bN``: what batching the texts a stream
  brings together costs, and what the length groups win back.
* ``onnx fp32-plain bN`` — the plain dynamo export (no fused ops), exported for the run into a
  temporary folder: the "before" of the fused graph.
* On a GPU (``--provider cuda``): PyTorch runs on CUDA and gains ``torch fp16 sorted bN`` (the
  strong GPU baseline), and the ONNX variants are fp32 and ``onnx fp16 bN`` (int8 is the CPU
  variant).

Parity is the cosine of each embedding with the reference (min, 1st percentile, mean) and, as the
quality effect that matters to recommendations, ``knn_overlap_at_10``: the mean share of each
text's 10 nearest neighbours in the corpus that stay the same.

The JSON holds every run, the medians, parity, the machine, the corpus and
``ratio_best_vs_seed`` / ``ratio_best_vs_torch_batched`` (best ONNX config against the seed and
against the best length-sorted batched PyTorch config), also restricted to configs with parity
>= 0.999 (``best_at_parity``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from stream.bench.texts import DEFAULT_SEED, has_cjk, labelled_texts

log = logging.getLogger(__name__)

Embeddings = npt.NDArray[np.float32]

PARITY_TARGET: Final = 0.999
TARGET_VS_SEED: Final = 30.0
TARGET_VS_TORCH: Final = 1.5
SEED_PAD: Final = 512
MAX_TOKENS: Final = 128
KNN_K: Final = 10
SEGMENT_MIN: Final = 256
FULL_TORCH_BATCHES: Final = (8, 32, 128)
FULL_ONNX_BATCHES: Final = (1, 8, 32, 128)
QUICK_TORCH_BATCHES: Final = (8,)
QUICK_ONNX_BATCHES: Final = (1, 8)


@dataclass
class Config:
    """One way of encoding the corpus."""

    name: str
    engine: str  # "torch" | "onnxruntime"
    method: str  # "seed" | "torch-single" | "torch-batched" | "onnx" | "onnx-arrival"
    variant: str  # "fp32" | "int8" | "fp32-plain"
    batch_size: int
    sorted: bool
    padding: str
    texts: int
    encode: Callable[[Sequence[str]], Embeddings] = field(repr=False)
    seconds: list[float] = field(default_factory=list)
    parity: dict[str, float] | None = None

    @property
    def rates(self) -> list[float]:
        return [self.texts / s for s in self.seconds]

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.seconds else 0.0


# --- PyTorch -----------------------------------------------------------------------------------


class TorchEncoder:
    """Hugging Face ``AutoModel`` + mean pooling + L2 normalisation, the seed's way and batched."""

    def __init__(
        self,
        source: Path,
        *,
        max_tokens: int = MAX_TOKENS,
        device: str = "cpu",
        half: bool = False,
    ) -> None:
        import torch
        import transformers
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.max_tokens = max_tokens
        self.device = torch.device(device)
        hf_logging: Any = transformers.utils.logging
        hf_logging.disable_progress_bar()
        self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModel.from_pretrained(source, local_files_only=True).eval()
        self.model = model.to(self.device, dtype=torch.float16 if half else torch.float32)
        self.model_class = type(self.model).__name__
        self.attention = str(getattr(self.model.config, "_attn_implementation", "?"))

    def _pool(self, input_ids: Any, mask: Any) -> Embeddings:
        """Mean pooling + L2 normalisation; copying the result to the host waits for the GPU."""
        torch = self.torch
        input_ids = input_ids.to(self.device, non_blocking=True)
        mask = mask.to(self.device, non_blocking=True)
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
        m = mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        out = torch.nn.functional.normalize(mean, p=2.0, dim=1)
        return np.asarray(out.cpu().numpy(), dtype=np.float32)

    def encode_seed(self, texts: Sequence[str]) -> Embeddings:
        """One text at a time, padded to 512 tokens (the seed method)."""
        rows = []
        with self.torch.inference_mode():
            for text in texts:
                enc = self.tokenizer(
                    [text],
                    padding="max_length",
                    max_length=SEED_PAD,
                    truncation=True,
                    return_tensors="pt",
                )
                rows.append(self._pool(enc["input_ids"], enc["attention_mask"])[0])
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)

    def encode_batched(self, texts: Sequence[str], batch_size: int, *, sort: bool) -> Embeddings:
        """Batches of ``batch_size`` padded to their longest text, in corpus or length order."""
        torch = self.torch
        ids: list[list[int]] = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_tokens
        )["input_ids"]
        order = (
            sorted(range(len(ids)), key=lambda i: len(ids[i])) if sort else list(range(len(ids)))
        )
        out: Embeddings | None = None
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                width = max(len(ids[i]) for i in chunk)
                input_ids = torch.zeros((len(chunk), width), dtype=torch.int64)
                mask = torch.zeros((len(chunk), width), dtype=torch.int64)
                for row, i in enumerate(chunk):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                    mask[row, : len(ids[i])] = 1
                emb = self._pool(input_ids, mask)
                if out is None:
                    out = np.empty((len(ids), emb.shape[1]), dtype=np.float32)
                out[chunk] = emb
        return out if out is not None else np.zeros((0, 0), np.float32)


# --- parity ------------------------------------------------------------------------------------


def _normalise(x: Embeddings) -> Embeddings:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), np.float32)


def _knn(emb: Embeddings, k: int) -> npt.NDArray[np.int64]:
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    k = min(k, len(emb) - 1)
    return np.asarray(np.argpartition(-sims, k - 1, axis=1)[:, :k], dtype=np.int64)


def parity(got: Embeddings, reference: Embeddings, *, knn: bool = True) -> dict[str, float]:
    """Cosine of each row with the reference, and the k-nearest-neighbour agreement."""
    a, b = _normalise(got), _normalise(reference)
    cos = (a.astype(np.float64) * b).sum(axis=1)
    out = {
        "min_cosine": round(float(np.clip(cos.min(), 0.0, 1.0)), 6),
        "p01_cosine": round(float(np.clip(np.percentile(cos, 1), 0.0, 1.0)), 6),
        "mean_cosine": round(float(np.clip(cos.mean(), 0.0, 1.0)), 6),
    }
    if knn and len(a) > KNN_K + 1:
        mine, ref = _knn(a, KNN_K), _knn(b, KNN_K)
        overlap = [len(set(x) & set(y)) / KNN_K for x, y in zip(mine, ref, strict=True)]
        out[f"knn_overlap_at_{KNN_K}"] = round(float(np.mean(overlap)), 4)
    return out


# --- machine and corpus ------------------------------------------------------------------------


def _cpu() -> dict[str, Any]:
    model = platform.processor() or "?"
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name") and model in ("?", "", "x86_64"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile")
    return {
        "model": model,
        "logical_cores": os.cpu_count(),
        "isa": [f for f in wanted if f in flags],
    }


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on POSIX
        return None


# --- the benchmark -----------------------------------------------------------------------------


@dataclass
class Options:
    texts: int
    repeats: int
    seed_texts: int
    torch_batches: tuple[int, ...]
    onnx_batches: tuple[int, ...]
    plain_baseline: bool
    provider: str
    quick: bool
    torch_device: str = "cpu"


@contextlib.contextmanager
def _plain_export(source: Path) -> Iterator[Path | None]:
    """The plain dynamo export (fp32, no fused ops) in a temporary folder."""
    from export.encoder_export import export_encoder

    tmp = Path(tempfile.mkdtemp(prefix="crossprofile-bench-"))
    try:
        export_encoder(
            source, tmp / "encoder", variants=["fp32"], parity_texts=0, progress=False, fuse=False
        )
        yield tmp / "encoder"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _source(manifest: dict[str, Any] | None) -> Path:
    from export.encoder_export import default_source

    src = (manifest or {}).get("source")
    if src and (Path(src) / "config.json").is_file():
        return Path(src)
    return default_source()


def run(opts: Options, *, progress: bool = True) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-ready report."""
    from tqdm.auto import tqdm

    from export.encoder_export import ensure_encoder, read_manifest
    from stream.encoder import VARIANT_FILES, Encoder
    from stream.settings import Settings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    settings = Settings()
    started = time.perf_counter()
    load_start = _load()
    encoder_dir = ensure_encoder(settings.model_copy(update={"encoder_variant": "fp32"}))
    manifest = read_manifest(encoder_dir) or {}
    source = _source(manifest)

    def onnx(variant: str, model_dir: Path) -> Encoder:
        return Encoder(
            model_dir,
            variant=variant,
            provider=opts.provider,
            threads=settings.encoder_threads,
            max_tokens=MAX_TOKENS,
            cache_size=0,
        )

    fp32 = onnx("fp32", encoder_dir)
    pairs = labelled_texts(opts.texts, count_tokens=fp32.token_lengths)
    texts = [t for _k, t in pairs]
    lengths = np.asarray(fp32.token_lengths(texts))
    seed_texts = texts[: max(1, min(opts.seed_texts, len(texts)))]

    import torch

    notes: list[str] = []
    gpu = opts.torch_device == "cuda"
    if gpu and not torch.cuda.is_available():
        raise SystemExit("--torch-device cuda: PyTorch sees no CUDA device here")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_enc = TorchEncoder(source, device=opts.torch_device)
        # On a GPU the strong PyTorch baseline is fp16 (the issue's H100 reference figure).
        torch_half = TorchEncoder(source, device="cuda", half=True) if gpu else None

    configs: list[Config] = [
        Config(
            "torch b1", "torch", "torch-single", "fp32", 1, False, "none", len(texts),
            lambda ts: torch_enc.encode_batched(ts, 1, sort=False),
        ),
        Config(
            "seed", "torch", "seed", "fp32", 1, False, f"max_length={SEED_PAD}", len(seed_texts),
            torch_enc.encode_seed,
        ),
    ]  # fmt: skip

    def torch_encode(
        enc: TorchEncoder, bs: int, sort: bool
    ) -> Callable[[Sequence[str]], Embeddings]:
        return lambda ts: enc.encode_batched(ts, bs, sort=sort)

    for sort in (False, True):
        for bs in opts.torch_batches:
            label = "sorted" if sort else "unsorted"
            configs.append(
                Config(
                    f"torch {label} b{bs}", "torch", "torch-batched", "fp32", bs, sort,
                    "dynamic", len(texts), torch_encode(torch_enc, bs, sort),
                )
            )  # fmt: skip
    if torch_half is not None:
        for bs in opts.torch_batches:
            configs.append(
                Config(
                    f"torch fp16 sorted b{bs}", "torch", "torch-batched", "fp16", bs, True,
                    "dynamic", len(texts), torch_encode(torch_half, bs, True),
                )
            )  # fmt: skip

    sessions: dict[str, Encoder] = {"fp32": fp32}
    cuda_ort = fp32.provider.startswith("CUDA")
    if opts.provider == "cuda" and not cuda_ort:
        notes.append(f"--provider cuda asked, but onnxruntime runs on {fp32.provider}")
    if cuda_ort:
        # Dynamic int8 (MatMulInteger) is a CPU variant; on a GPU the variant is fp16.
        if (encoder_dir / VARIANT_FILES["fp16"]).exists():
            sessions["fp16"] = onnx("fp16", encoder_dir)
        else:
            notes.append(
                "no fp16 model in the encoder folder (crossprofile export-encoder "
                "--variants fp32,int8,fp16 --force): fp16 not measured"
            )
    elif (encoder_dir / VARIANT_FILES["int8"]).exists():
        sessions["int8"] = onnx("int8", encoder_dir)
    else:
        notes.append("no int8 model in the encoder folder: int8 not measured")
    fused = "optimizer" in str(manifest.get("exporter", ""))
    plain_ctx: contextlib.AbstractContextManager[Path | None] = contextlib.nullcontext(None)
    if opts.plain_baseline and fused:
        plain_ctx = _plain_export(source)
    elif opts.plain_baseline:
        notes.append("the encoder folder holds the plain graph already: no separate baseline")

    def onnx_encode(enc: Encoder, bs: int) -> Callable[[Sequence[str]], Embeddings]:
        def encode(ts: Sequence[str]) -> Embeddings:
            enc.batch_size = bs
            return enc.encode(ts)

        return encode

    def onnx_arrival(
        enc: Encoder, bs: int, call_cost: float | None
    ) -> Callable[[Sequence[str]], Embeddings]:
        """One encoder call per ``bs`` texts in corpus order, as a worker's batches come: each
        sorted within itself and cut into length groups (``call_cost`` None: the provider's
        default cost per call; inf: kept whole)."""
        cost = enc.call_cost_tokens if call_cost is None else call_cost

        def encode(ts: Sequence[str]) -> Embeddings:
            enc.batch_size = bs
            default, enc.call_cost_tokens = enc.call_cost_tokens, cost
            try:
                return np.concatenate([enc.encode(ts[i : i + bs]) for i in range(0, len(ts), bs)])
            finally:
                enc.call_cost_tokens = default

        return encode

    with plain_ctx as plain_dir:
        if plain_dir is not None:
            sessions["fp32-plain"] = onnx("fp32", plain_dir)
        for variant, enc in sessions.items():
            for bs in opts.onnx_batches:
                configs.append(
                    Config(
                        f"onnx {variant} b{bs}", "onnxruntime", "onnx", variant, bs, True,
                        "dynamic", len(texts), onnx_encode(enc, bs),
                    )
                )  # fmt: skip
        arrival = settings.encoder_batch_size
        if not cuda_ort:  # on CUDA a batch is kept whole anyway: the two would be the same
            for label, cost in (("arrival", None), ("arrival-whole", math.inf)):
                configs.append(
                    Config(
                        f"onnx fp32 {label} b{arrival}", "onnxruntime", "onnx-arrival", "fp32",
                        arrival, False, "length groups" if cost is None else "dynamic",
                        len(texts), onnx_arrival(fp32, arrival, cost),
                    )
                )  # fmt: skip

        # Rounds: each config encodes its slice r of the corpus in round r, so a burst of load
        # from a neighbour hits every config alike. Sorted configs get slices of the corpus in
        # global length order, the others slices in corpus order; slices are a multiple of every
        # batch size, so the batches are exactly those of one call on the whole corpus.
        size = segment_size([*opts.torch_batches, *opts.onnx_batches, arrival], len(texts))
        rounds = -(-len(texts) // size)
        by_length = np.argsort(lengths, kind="stable")
        by_corpus = np.arange(len(texts))
        plans: dict[str, list[npt.NDArray[np.int64]]] = {}
        for cfg in configs:
            if cfg.method == "seed":
                plans[cfg.name] = list(np.array_split(np.arange(len(seed_texts)), rounds))
            else:
                order = by_length if cfg.sorted else by_corpus
                plans[cfg.name] = [order[r * size : (r + 1) * size] for r in range(rounds)]
        total = sum(c.texts for c in configs) * opts.repeats
        bar = tqdm(
            total=total, desc="bench encoder", unit="text", disable=not progress, mininterval=0.5
        )
        for cfg in configs:  # warm-up: first-call allocations, lazy inits
            bar.set_postfix_str(f"warm-up {cfg.name}")
            cfg.encode(texts[: 1 if cfg.method == "seed" else 8])
        outputs: dict[str, Embeddings] = {}
        for rep in range(opts.repeats):
            for cfg in configs:
                cfg.seconds.append(0.0)
            for r in range(rounds):
                start = (r + rep) % len(configs)  # rotate: no config always follows the same one
                for cfg in configs[start:] + configs[:start]:
                    idx = plans[cfg.name][r]
                    if len(idx) == 0:
                        continue
                    source_texts = seed_texts if cfg.method == "seed" else texts
                    batch = [source_texts[i] for i in idx]
                    bar.set_postfix_str(f"{cfg.name} ({rep + 1}/{opts.repeats})")
                    gc.collect()
                    t0 = time.perf_counter()
                    emb = cfg.encode(batch)
                    cfg.seconds[-1] += time.perf_counter() - t0
                    if rep == 0:
                        if cfg.name not in outputs:
                            outputs[cfg.name] = np.zeros((cfg.texts, emb.shape[1]), np.float32)
                        outputs[cfg.name][idx] = emb
                    bar.update(len(idx))
            if rep == 0:
                reference = outputs[configs[0].name]  # torch b1
                for cfg in configs:
                    ref = reference[: cfg.texts]
                    cfg.parity = parity(outputs[cfg.name], ref, knn=cfg.method != "seed")
                outputs.clear()
        bar.close()

    report = _report(configs, opts, notes)
    report["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["machine"] = {
        "cpu": _cpu(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_device": opts.torch_device,
        "gpu": torch.cuda.get_device_name(0) if gpu else None,
        "onnxruntime": _ort_version(),
        "onnxruntime_threads": settings.encoder_threads or "default",
        "provider": fp32.provider,
        "load_average_start": load_start,
        "load_average_end": _load(),
    }
    report["corpus"] = {
        "generator": "stream.bench.texts.event_texts",
        "seed": DEFAULT_SEED,
        "texts": len(texts),
        "distinct": len(set(texts)),
        "kinds": dict(Counter(k for k, _t in pairs)),
        "with_chinese": sum(has_cjk(t) for t in texts),
        "tokens": {
            "min": int(lengths.min()),
            "max": int(lengths.max()),
            "mean": round(float(lengths.mean()), 2),
            "p50": float(np.percentile(lengths, 50)),
            "p90": float(np.percentile(lengths, 90)),
            "note": "special tokens included",
        },
        "examples": texts[:6],
    }
    report["encoder"] = {
        "dir": str(encoder_dir),
        "exporter": manifest.get("exporter"),
        "fused_ops": manifest.get("fused_ops"),
        "source": str(source),
        "torch_model": f"{torch_enc.model_class} (attention: {torch_enc.attention})",
        "max_tokens": MAX_TOKENS,
    }
    return report


def segment_size(batch_sizes: Sequence[int], n: int, *, at_least: int = SEGMENT_MIN) -> int:
    """Texts per round: a multiple of every batch size, >= ``at_least``; ``n`` if that is more.

    >>> segment_size([8, 32, 128], 2000), segment_size([1, 8], 32), segment_size([3, 7], 1000)
    (256, 32, 273)
    """
    lcm = math.lcm(*batch_sizes) if batch_sizes else 1
    size = lcm * max(1, -(-min(at_least, n) // lcm))
    return min(size, n)


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def _report(configs: list[Config], opts: Options, notes: list[str]) -> dict[str, Any]:
    seed = next(c for c in configs if c.method == "seed")
    torch_sorted = [c for c in configs if c.method == "torch-batched" and c.sorted]
    best_torch = max(torch_sorted, key=lambda c: c.median) if torch_sorted else None
    onnx = [c for c in configs if c.engine == "onnxruntime" and c.variant != "fp32-plain"]
    best = max(onnx, key=lambda c: c.median) if onnx else None
    ok = [c for c in onnx if c.parity and c.parity["min_cosine"] >= PARITY_TARGET]
    best_ok = max(ok, key=lambda c: c.median) if ok else None

    def ratio(a: Config | None, b: Config | None) -> float | None:
        if a is None or b is None or b.median <= 0:
            return None
        return round(a.median / b.median, 2)

    results = []
    for c in configs:
        results.append(
            {
                "name": c.name,
                "engine": c.engine,
                "method": c.method,
                "variant": c.variant,
                "batch_size": c.batch_size,
                "sorted": c.sorted,
                "padding": c.padding,
                "texts": c.texts,
                "repeats": len(c.seconds),
                "seconds": [round(s, 4) for s in c.seconds],
                "sentences_per_s": [round(r, 2) for r in c.rates],
                "sentences_per_s_median": round(c.median, 2),
                "parity": c.parity,
                "vs_seed": ratio(c, seed),
                "vs_torch_batched": ratio(c, best_torch),
            }
        )

    def summary(c: Config | None) -> dict[str, Any] | None:
        if c is None:
            return None
        return {"name": c.name, "sentences_per_s": round(c.median, 2), "parity": c.parity}

    met_best = (
        best is not None
        and (ratio(best, seed) or 0) >= TARGET_VS_SEED
        and (ratio(best, best_torch) or 0) >= TARGET_VS_TORCH
    )
    met_ok = (
        best_ok is not None
        and (ratio(best_ok, seed) or 0) >= TARGET_VS_SEED
        and (ratio(best_ok, best_torch) or 0) >= TARGET_VS_TORCH
    )
    return {
        "benchmark": "encoder",
        "format": 1,
        "quick": opts.quick,
        "repeats": opts.repeats,
        "statistic": "median over the repeats of sentences/s; within a repeat, configs take "
        "turns slice by slice (rounds) so that load from neighbours hits them alike",
        "reference": "PyTorch fp32 (transformers AutoModel), one text at a time, no padding "
        "(config 'torch b1'); parity of every config is against it",
        "seed_subsample": {
            "texts": seed.texts,
            "of": max((c.texts for c in configs), default=0),
            "why": f"the seed pads every text to {SEED_PAD} tokens, so its cost per text does "
            "not depend on the text; it runs on the first texts of the corpus only",
        },
        "results": results,
        "seed": summary(seed),
        "best_torch_batched": summary(best_torch),
        "best": summary(best),
        "best_at_parity": summary(best_ok),
        "ratio_best_vs_seed": ratio(best, seed),
        "ratio_best_vs_torch_batched": ratio(best, best_torch),
        "ratio_best_at_parity_vs_seed": ratio(best_ok, seed),
        "ratio_best_at_parity_vs_torch_batched": ratio(best_ok, best_torch),
        "targets": {
            "vs_seed": TARGET_VS_SEED,
            "vs_torch_batched": TARGET_VS_TORCH,
            "min_cosine": PARITY_TARGET,
            "met_by_best": met_best,
            "met_by_best_at_parity": met_ok,
        },
        "notes": notes,
    }


# --- output ------------------------------------------------------------------------------------


def format_table(report: dict[str, Any]) -> str:
    """The results as a plain-text table, followed by the ratios."""
    head = (
        f"{'config':<27} {'texts':>5} {'sent/s':>8} {'min–max':>15} {'min cos':>8} "
        f"{'mean cos':>8} {'knn@10':>6} {'×seed':>7} {'×torch':>6}"
    )
    lines = [head, "-" * len(head)]

    def num(x: float | None, fmt: str) -> str:
        return "–" if x is None else format(x, fmt)

    for r in report["results"]:
        rates = r["sentences_per_s"]
        par = r["parity"] or {}
        lines.append(
            f"{r['name']:<27} {r['texts']:>5} {r['sentences_per_s_median']:>8.1f} "
            f"{f'{min(rates):.0f}–{max(rates):.0f}':>15} "
            f"{num(par.get('min_cosine'), '.5f'):>8} {num(par.get('mean_cosine'), '.5f'):>8} "
            f"{num(par.get('knn_overlap_at_10'), '.3f'):>6} {num(r['vs_seed'], '.1f'):>7} "
            f"{num(r['vs_torch_batched'], '.2f'):>6}"
        )
    lines.append("")
    for key in ("best", "best_at_parity"):
        b = report[key]
        if b is None:
            lines.append(f"{key}: none")
            continue
        suffix = "_at_parity" if key == "best_at_parity" else ""
        lines.append(
            f"{key}: {b['name']} {b['sentences_per_s']:.1f} sent/s, min cosine "
            f"{b['parity']['min_cosine']:.5f} → {report[f'ratio_best{suffix}_vs_seed']}× seed, "
            f"{report[f'ratio_best{suffix}_vs_torch_batched']}× best sorted PyTorch "
            f"({report['best_torch_batched']['name']})"
        )
    t = report["targets"]
    lines.append(
        f"targets (≥{t['vs_seed']:g}× seed, ≥{t['vs_torch_batched']:g}× sorted PyTorch): "
        f"best {'met' if t['met_by_best'] else 'not met'}, "
        f"at parity ≥{t['min_cosine']} {'met' if t['met_by_best_at_parity'] else 'not met'}"
    )
    lines.extend(f"note: {n}" for n in report["notes"])
    return "\n".join(lines)


def _batches(value: str) -> tuple[int, ...]:
    try:
        out = tuple(sorted({int(x) for x in value.split(",") if x.strip()}))
    except ValueError as exc:
        raise argparse.ArgumentTypeError("a comma-separated list of batch sizes") from exc
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError("batch sizes are integers >= 1")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossprofile bench encoder",
        description="Sentences/s and parity of the seed method (PyTorch, one text at a time, "
        "padded to 512), batched PyTorch (unsorted and length-sorted) and the ONNX encoder "
        "(fp32, int8), on the same realistic event texts, in one run.",
        epilog="examples:\n"
        "  crossprofile bench encoder --json .data/bench/encoder.json\n"
        "  crossprofile bench encoder --quick --json /tmp/quick.json   # seconds, for CI\n"
        "Figures vary with the machine's load; compare configs within one run.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the report here")
    parser.add_argument("--texts", type=int, metavar="N", help="corpus size (default 2000)")
    parser.add_argument("--repeats", type=int, metavar="R", help="repeats per config (default 3)")
    parser.add_argument(
        "--seed-texts", type=int, metavar="M", help="texts for the slow seed method (default 60)"
    )
    parser.add_argument(
        "--torch-batches", type=_batches, metavar="LIST", help="PyTorch batch sizes (8,32,128)"
    )
    parser.add_argument(
        "--onnx-batches", type=_batches, metavar="LIST", help="ONNX batch sizes (1,8,32,128)"
    )
    parser.add_argument(
        "--no-plain-baseline",
        action="store_true",
        help="skip the plain (unfused) dynamo export as a baseline",
    )
    parser.add_argument(
        "--provider",
        choices=("cpu", "auto", "cuda"),
        default="cpu",
        help="onnxruntime provider (default cpu: PyTorch runs on the CPU too)",
    )
    parser.add_argument(
        "--torch-device",
        choices=("cpu", "cuda"),
        help="where the PyTorch configs run (default: cuda with --provider cuda, else cpu); "
        "on cuda an fp16 PyTorch baseline is added",
    )
    parser.add_argument(
        "--plot", type=Path, metavar="PNG", help="also draw sentences/s against batch size"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 32 texts, 1 repeat, 2 seed texts, few batch sizes, no baseline",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar or table")
    return parser


def options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Options:
    quick = bool(args.quick)
    texts = args.texts if args.texts is not None else (32 if quick else 2000)
    repeats = args.repeats if args.repeats is not None else (1 if quick else 3)
    seed = args.seed_texts if args.seed_texts is not None else (2 if quick else 60)
    if texts < 2 or repeats < 1 or seed < 1:
        parser.error("--texts must be >= 2, --repeats and --seed-texts >= 1")
    return Options(
        texts=texts,
        repeats=repeats,
        seed_texts=seed,
        torch_batches=args.torch_batches or (QUICK_TORCH_BATCHES if quick else FULL_TORCH_BATCHES),
        onnx_batches=args.onnx_batches or (QUICK_ONNX_BATCHES if quick else FULL_ONNX_BATCHES),
        plain_baseline=not (args.no_plain_baseline or quick),
        provider=args.provider,
        quick=quick,
        torch_device=args.torch_device or ("cuda" if args.provider == "cuda" else "cpu"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``crossprofile bench encoder``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    opts = options(args, parser)
    report = run(opts, progress=not args.quiet)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", "utf-8")
    if args.plot is not None:
        from stream.bench.plot import plot_throughput

        plot_throughput(report, args.plot)
    if not args.quiet:
        print(format_table(report))
        if args.json is not None:
            print(f"report: {args.json}")
        if args.plot is not None:
            print(f"plot: {args.plot}")
    return 0


__all__ = ["Config", "Options", "TorchEncoder", "format_table", "main", "parity", "run"]
