"""Runtime text encoder: the exported ONNX sentence encoder behind a small, Faust-free API.

The model folder is written by ``crossprofile export-encoder`` (see :mod:`export.encoder_export`):
``model.onnx`` (fp32), optionally ``model.int8.onnx`` / ``model.fp16.onnx``, the tokenizer files and
``manifest.json``. Mean pooling and L2 normalisation are inside the graph, so :meth:`Encoder.encode`
is tokenise → pad per batch → run → (re-normalise defensively) and nothing else.

* Tokenisation uses the ``tokenizers`` library directly (the engine behind ``transformers``' fast
  tokenizer, same ids) — it loads in milliseconds, where importing ``transformers`` takes seconds.
* Texts are sorted by token length and cut into batches of ``batch_size`` so padding stays small,
  truncated at ``max_tokens`` (long text is truncated, never rejected), and returned in input order.
  On CPU a batch is further cut into runs of similar length where the padding saved outweighs
  the cost of one more onnxruntime call (:func:`length_groups`): a worker's batch is whatever
  texts arrived together, 10 to 40 tokens, and padding all of them to the longest doubled the
  work (measured: 75 -> 136 texts/s on one core, fp32; 107 -> 206 int8).
* :meth:`Encoder.encode_cached` keeps a bounded LRU cache keyed by a caller-chosen key (e.g. item id
  plus a hash of the text), so a popular item is encoded once.
* Every failure of onnxruntime or the tokenizer surfaces as :class:`EncoderError`.

This module never imports torch.

>>> enc = Encoder(Path("/nonexistent"))  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
EncoderError: no exported encoder at /nonexistent: run `crossprofile export-encoder` first
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import json
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from stream.settings import Settings

log = logging.getLogger(__name__)

Variant = Literal["fp32", "int8", "fp16"]
Provider = Literal["auto", "cpu", "cuda"]

#: File name of each model variant inside the encoder folder.
VARIANT_FILES: Final[dict[str, str]] = {
    "fp32": "model.onnx",
    "int8": "model.int8.onnx",
    "fp16": "model.fp16.onnx",
}
MANIFEST_NAME: Final = "manifest.json"
TOKENIZER_FILE: Final = "tokenizer.json"
OUTPUT_NAME: Final = "embeddings"

_CUDA: Final = "CUDAExecutionProvider"
_CPU: Final = "CPUExecutionProvider"

# onnxruntime's attention kernels, as bits of the CUDA provider's ``sdpa_kernel`` option
# (onnxruntime/contrib_ops/cpu/bert/attention_common.h: AttentionBackend).
_SDPA_FLASH, _SDPA_EFFICIENT, _SDPA_TRT_FUSED, _SDPA_CUDNN_FLASH, _SDPA_MATH = 1, 2, 4, 8, 16
#: CUDA provider options. Every attention kernel but cuDNN's flash attention: onnxruntime 1.31
#: picks that one for fp16 on Hopper and builds a cuDNN graph for each new (batch, length)
#: shape — measured on an H100: 63 ms median for the first batch of each shape, 1.0 ms after.
#: A stream's batches come in many shapes; without it a new shape costs 1.3 ms (seen: 1.2 ms).
_CUDA_OPTIONS: Final[dict[str, str]] = {
    "sdpa_kernel": str(_SDPA_FLASH | _SDPA_EFFICIENT | _SDPA_TRT_FUSED | _SDPA_MATH)
}

Embeddings = npt.NDArray[np.float32]

#: What one more onnxruntime call costs on the CPU provider, in padded tokens: a batch is cut
#: into runs of similar length where that saves more padding than this per extra call. Measured
#: on these 2-core AVX2 machines (batches of 32 event texts in arrival order, sentences/s): fp32
#: one thread 75.5 unsplit, 130.8 / 135.8 / 134.2 / 131.9 at 4 / 8 / 16 / 32 tokens; fp32 two
#: threads 144.8 unsplit, 202-244 at 4-32 (best 32); int8 one thread 107 unsplit, 196-207 at
#: 8-64. Flat from 8 to 32, hence 16. On CUDA a call costs far more than padding (kernel
#: launches), so batches stay whole there.
CPU_CALL_COST_TOKENS: Final = 16.0


class EncoderError(Exception):
    """The encoder cannot be loaded or failed to encode; the message says what to do."""


def _cuda_usable() -> bool:
    """Whether onnxruntime's CUDA provider library can be loaded here (cheap, quiet probe).

    onnxruntime-gpu lists CUDAExecutionProvider even on machines without CUDA, and then logs a
    loud error when a session asks for it; probing the provider library first keeps ``auto``
    quiet on CPU-only machines.
    """
    import onnxruntime as ort

    if _CUDA not in ort.get_available_providers():
        return False
    lib = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if not lib.exists():  # Windows or an unusual layout: let onnxruntime decide
        return True
    try:
        ctypes.CDLL(str(lib))
        return True
    except OSError:
        pass
    # CUDA may come from the nvidia-* wheels, which onnxruntime can preload.
    if importlib.util.find_spec("nvidia") is None or not hasattr(ort, "preload_dlls"):
        return False
    try:
        with (
            open(os.devnull, "w") as devnull,
            contextlib.redirect_stdout(devnull),
            contextlib.redirect_stderr(devnull),
        ):
            ort.preload_dlls()
        ctypes.CDLL(str(lib))
        return True
    except Exception:
        return False


def _file_digest(path: Path) -> str:
    """16 hex digits of BLAKE2b over a file (the 90-MB fp32 graph: ~0.15 s, once per encoder)."""
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EncoderError(f"unreadable encoder manifest {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def length_groups(lengths: Sequence[int], call_cost: float) -> list[int]:
    """Where to cut ascending token ``lengths`` into runs, each run one onnxruntime call padded
    to its longest text, so that the padded tokens plus ``call_cost`` per call are fewest
    (dynamic programming over the cut points, O(n²) for a batch of n). Returns each run's end.

    >>> length_groups([5, 5, 6, 20, 21, 40], 16)
    [3, 5, 6]
    >>> length_groups([5, 5, 6, 20, 21, 40], 1000)  # calls dearer than any padding: one run
    [6]
    >>> length_groups([12, 12, 12], 0)  # equal lengths: nothing to save
    [3]
    """
    n = len(lengths)
    if n == 0:
        return []
    if not math.isfinite(call_cost):
        return [n]
    best = [0.0] * (n + 1)  # best[j]: cheapest cost of the first j texts
    cut = [0] * (n + 1)  # where the last run of that best starts
    for j in range(1, n + 1):
        width = lengths[j - 1]  # the longest text of any run ending at j
        lowest, start = math.inf, 0
        for i in range(j):
            cost = best[i] + (j - i) * width
            if cost < lowest:
                lowest, start = cost, i
        best[j] = lowest + call_cost
        cut[j] = start
    ends: list[int] = []
    j = n
    while j:
        ends.append(j)
        j = cut[j]
    return ends[::-1]


class Encoder:
    """Batched, cached sentence encoder over an exported ONNX model.

    Thread-safe: ``encode`` may run in executor threads while the event loop keeps going.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        variant: Variant | str = "fp32",
        provider: Provider | str = "auto",
        threads: int = 0,
        max_tokens: int = 128,
        batch_size: int = 32,
        cache_size: int = 50_000,
        call_cost_tokens: float | None = None,
    ) -> None:
        if call_cost_tokens is not None and not call_cost_tokens >= 0:
            raise ValueError("call_cost_tokens must be >= 0 (or None for the provider's default)")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if max_tokens < 2:
            raise ValueError("max_tokens must be >= 2")
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        if variant not in VARIANT_FILES:
            raise ValueError(f"variant must be one of {sorted(VARIANT_FILES)}, not {variant!r}")
        if provider not in ("auto", "cpu", "cuda"):
            raise ValueError(f"provider must be auto, cpu or cuda, not {provider!r}")

        self.model_dir = Path(model_dir)
        self.variant = variant
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.cache_hits = 0
        self.cache_misses = 0
        self._cache: OrderedDict[str, Embeddings] = OrderedDict()
        self._lock = threading.Lock()

        model_path = self.model_dir / VARIANT_FILES[variant]
        tokenizer_path = self.model_dir / TOKENIZER_FILE
        if not self.model_dir.is_dir() or not (self.model_dir / VARIANT_FILES["fp32"]).exists():
            raise EncoderError(
                f"no exported encoder at {self.model_dir}: run `crossprofile export-encoder` first"
            )
        if not model_path.exists():
            raise EncoderError(
                f"encoder variant {variant!r} missing ({model_path}): run "
                f"`crossprofile export-encoder --variants fp32,{variant} --force`"
            )
        if not tokenizer_path.exists():
            raise EncoderError(
                f"{tokenizer_path} missing: run `crossprofile export-encoder --force`"
            )
        manifest = _read_manifest(self.model_dir)
        max_positions = int(manifest.get("max_position_embeddings", 512))
        self.max_tokens = min(max_tokens, max_positions)

        self._tokenizer = self._load_tokenizer(tokenizer_path)
        self._session = self._load_session(model_path, provider, threads)
        self.provider: str = str(self._session.get_providers()[0])
        #: padded tokens one more onnxruntime call is worth (:func:`length_groups`); ``inf``
        #: keeps each batch whole (the default on CUDA)
        self.call_cost_tokens: float = (
            float(call_cost_tokens)
            if call_cost_tokens is not None
            else CPU_CALL_COST_TOKENS
            if self.provider == _CPU
            else math.inf
        )

        inputs = {i.name: i for i in self._session.get_inputs()}
        for required in ("input_ids", "attention_mask"):
            if required not in inputs:
                raise EncoderError(f"{model_path} has no input {required!r}; re-export it")
        self._input_names = list(inputs)
        self._int_dtype: type[np.signedinteger[Any]] = (
            np.int32 if inputs["input_ids"].type == "tensor(int32)" else np.int64
        )
        outputs = self._session.get_outputs()
        names = [o.name for o in outputs]
        self._output_name = OUTPUT_NAME if OUTPUT_NAME in names else names[0]
        shape = next(o.shape for o in outputs if o.name == self._output_name)
        dim = shape[-1] if shape and isinstance(shape[-1], int) else manifest.get("dim")
        if not isinstance(dim, int):
            dim = int(self._run_batch([[0, 0]]).shape[1])
        self.dim: int = dim
        #: what vectors this encoder makes: variant, dimension, token limit (longer texts are
        #: cut there) and a hash of the graph file. Workers share vectors (on the items topic)
        #: only between equal fingerprints.
        self.fingerprint: str = f"{variant}:{dim}:{self.max_tokens}:{_file_digest(model_path)}"

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings) -> Encoder:
        """An encoder configured by ``settings`` (``encoder_*`` fields), reading ``encoder_dir``."""
        return cls(
            settings.encoder_dir,
            variant=settings.encoder_variant,
            provider=settings.encoder_provider,
            threads=settings.encoder_intra_threads(),
            max_tokens=settings.encoder_max_tokens,
            batch_size=settings.encoder_batch_size,
            cache_size=settings.encoder_cache_size,
            call_cost_tokens=settings.encoder_call_cost_tokens or None,
        )

    def _load_tokenizer(self, path: Path) -> Any:
        try:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(path))
            tok.no_padding()  # we pad per batch ourselves
            tok.enable_truncation(max_length=self.max_tokens)
        except Exception as exc:
            raise EncoderError(f"cannot load tokenizer {path}: {exc}") from exc
        return tok

    def _load_session(self, model_path: Path, provider: str, threads: int) -> Any:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise EncoderError("onnxruntime is not installed") from exc

        providers: list[str | tuple[str, dict[str, str]]] = [_CPU]
        if provider == "cuda" or (provider == "auto" and _cuda_usable()):
            if _CUDA in ort.get_available_providers():
                providers = [(_CUDA, _CUDA_OPTIONS), _CPU]
            else:
                log.warning("encoder: CUDA requested but not available; using CPU")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(model_path), options, providers=providers)
        except Exception as exc:
            raise EncoderError(f"cannot load ONNX model {model_path}: {exc}") from exc
        if provider == "cuda" and session.get_providers()[0] != _CUDA:
            log.warning("encoder: CUDA requested but the session fell back to CPU")
        return session

    # --- encoding ----------------------------------------------------------------------------
    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Token count of each text after truncation (special tokens included)."""
        return [len(e.ids) for e in self._tokenize(texts)]

    def _tokenize(self, texts: Sequence[str]) -> list[Any]:
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single str")
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"texts must be str, got {type(t).__name__}")
        try:
            return list(self._tokenizer.encode_batch(list(texts), add_special_tokens=True))
        except Exception as exc:
            raise EncoderError(f"tokenizer failed: {exc}") from exc

    def _run_batch(self, ids: Sequence[Sequence[int]]) -> Embeddings:
        width = max(len(x) for x in ids)
        input_ids = np.zeros((len(ids), width), dtype=self._int_dtype)
        mask = np.zeros((len(ids), width), dtype=self._int_dtype)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feed = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        try:
            out = self._session.run([self._output_name], feed)[0]
        except Exception as exc:
            raise EncoderError(f"onnxruntime failed on a batch of {len(ids)}: {exc}") from exc
        emb = np.asarray(out, dtype=np.float32)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return np.asarray(emb / np.maximum(norms, 1e-12), dtype=np.float32)

    def encode(self, texts: Sequence[str]) -> Embeddings:
        """L2-normalised embeddings, shape ``(len(texts), dim)``, float32, in input order."""
        encodings = self._tokenize(texts)
        out = np.empty((len(encodings), self.dim), dtype=np.float32)
        if not encodings:
            return out
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            first = 0
            for end in length_groups(lengths[chunk].tolist(), self.call_cost_tokens):
                run = chunk[first:end]
                out[run] = self._run_batch([encodings[i].ids for i in run])
                first = end
        return out

    def encode_cached(self, keys: Sequence[str], texts: Sequence[str]) -> Embeddings:
        """Like :meth:`encode`, through a bounded LRU cache keyed by ``keys``.

        Only misses are encoded (a key repeated within one call is encoded once). The caller
        chooses keys so that a changed text gets a new key (e.g. item id + hash of the text).
        ``cache_hits`` + ``cache_misses`` grows by ``len(keys)`` per call.
        """
        if isinstance(keys, str) or isinstance(texts, str):
            raise TypeError("keys and texts must be sequences, not a single str")
        if len(keys) != len(texts):
            raise ValueError(f"{len(keys)} keys for {len(texts)} texts")
        rows: list[Embeddings | None] = [None] * len(keys)
        todo: dict[str, list[int]] = {}
        with self._lock:
            for i, key in enumerate(keys):
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    rows[i] = hit
                    self.cache_hits += 1
                elif key in todo:
                    todo[key].append(i)
                    self.cache_hits += 1
                else:
                    todo[key] = [i]
                    self.cache_misses += 1
        if todo:
            fresh = self.encode([texts[positions[0]] for positions in todo.values()])
            with self._lock:
                for (key, positions), vec in zip(todo.items(), fresh, strict=True):
                    vec = vec.copy()
                    vec.flags.writeable = False
                    for i in positions:
                        rows[i] = vec
                    self._remember(key, vec)
        if not rows:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.stack([r for r in rows if r is not None]).astype(np.float32, copy=False)

    # --- cache management --------------------------------------------------------------------
    def cache_put(self, key: str, vector: Embeddings) -> None:
        """Remember ``vector`` under ``key`` (one made elsewhere by an encoder with the same
        :attr:`fingerprint`, e.g. another worker's), so a later :meth:`encode_cached` of that
        key is a hit. Counts neither a hit nor a miss."""
        vec = np.array(vector, dtype=np.float32).reshape(-1)
        if vec.shape != (self.dim,):
            raise ValueError(f"vector of shape {vec.shape} for an encoder of dim {self.dim}")
        vec.flags.writeable = False
        with self._lock:
            self._remember(key, vec)

    def _remember(self, key: str, vec: Embeddings) -> None:
        """Cache ``vec`` (read-only) as the most recent entry, evicting the least recent past
        ``cache_size``; the caller holds ``_lock``."""
        if self.cache_size == 0:
            return
        self._cache[key] = vec
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    @property
    def cache_len(self) -> int:
        """Entries currently cached."""
        return len(self._cache)

    def cache_clear(self) -> None:
        """Drop every cached embedding (counters are kept)."""
        with self._lock:
            self._cache.clear()

    def __repr__(self) -> str:
        return (
            f"Encoder({str(self.model_dir)!r}, variant={self.variant!r}, "
            f"provider={self.provider!r}, dim={self.dim})"
        )


__all__ = [
    "CPU_CALL_COST_TOKENS",
    "MANIFEST_NAME",
    "TOKENIZER_FILE",
    "VARIANT_FILES",
    "Encoder",
    "EncoderError",
    "length_groups",
]
