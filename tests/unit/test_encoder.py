"""The runtime encoder (stream.encoder) over the exported ONNX model.

The session fixture exports the encoder once into the repository's git-ignored ``.data/`` (shared
with the other tests and ``make run``); later runs reuse it.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from export.encoder_export import ensure_encoder, read_manifest
from stream.encoder import CPU_CALL_COST_TOKENS, Encoder, EncoderError, length_groups
from stream.settings import Settings

DATA_DIR = Path(__file__).resolve().parents[2] / ".data"


@pytest.fixture(scope="session")
def encoder_dir() -> Path:
    settings = Settings(data_dir=DATA_DIR, encoder_variant="fp32")
    if read_manifest(settings.encoder_dir) is None and importlib.util.find_spec("torch") is None:
        pytest.skip("no exported encoder and no torch to export one: pip install '.[export]'")
    return ensure_encoder(settings, progress=False)


@pytest.fixture(scope="module")
def encoder(encoder_dir: Path) -> Iterator[Encoder]:
    yield Encoder(encoder_dir, provider="cpu", batch_size=4, max_tokens=128, cache_size=3)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


MIXED = [
    "running shoes",
    "A long review: " + "the battery lasts all day and the screen is bright. " * 6,
    "x",
    "Trail running sneakers, waterproof, size 42 - black",
    "chocolate cake recipe",
    "这款跑步鞋非常轻便，适合长跑。",
    "",
    "how to fix a flat bike tyre on a mountain bike",
    "OK",
]


def test_shape_dtype_and_unit_norm(encoder: Encoder) -> None:
    emb = encoder.encode(MIXED)
    assert emb.shape == (len(MIXED), encoder.dim)
    assert encoder.dim == 384
    assert emb.dtype == np.float32
    assert np.all(np.isfinite(emb))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_order_preserved_across_sorted_batches(encoder: Encoder) -> None:
    batch = encoder.encode(MIXED)  # batch_size=4: several length-sorted batches
    for i, text in enumerate(MIXED):
        assert _cos(batch[i], encoder.encode([text])[0]) > 0.9999, text


def test_alone_equals_padded(encoder_dir: Path) -> None:
    enc = Encoder(encoder_dir, provider="cpu", batch_size=64)  # one batch, heavily padded
    texts = ["wireless earbuds", *(t * 3 for t in MIXED if len(t) > 20)]
    alone = enc.encode(["wireless earbuds"])[0]
    padded = enc.encode(texts)[0]
    assert max(enc.token_lengths(texts)) > 3 * enc.token_lengths(["wireless earbuds"])[0]
    assert _cos(alone, padded) > 0.9999


def _cost(lengths: list[int], ends: list[int], call_cost: float) -> float:
    starts = [0, *ends[:-1]]
    return sum(call_cost + (e - s) * lengths[e - 1] for s, e in zip(starts, ends, strict=True))


def test_length_groups_is_the_cheapest_cut() -> None:
    rng = random.Random(3)
    for _ in range(200):
        n = rng.randint(1, 9)
        lengths = sorted(rng.randint(3, 60) for _ in range(n))
        call_cost = rng.choice([0.0, 4.0, 16.0, 50.0])
        ends = length_groups(lengths, call_cost)
        assert ends[-1] == n and ends == sorted(set(ends))  # runs cover every text, in order
        every = ([*cuts, n] for k in range(n) for cuts in itertools.combinations(range(1, n), k))
        cheapest = min(_cost(lengths, list(e), call_cost) for e in every)
        assert _cost(lengths, ends, call_cost) == pytest.approx(cheapest), (lengths, call_cost)


def test_length_groups_edges() -> None:
    assert length_groups([], 16) == []
    assert length_groups([7], 16) == [1]
    assert length_groups([3, 90], math.inf) == [2]  # never cut
    assert length_groups([3, 90], 0) == [1, 2]


def test_split_batches_give_the_same_vectors(encoder_dir: Path) -> None:
    texts = [*MIXED, *(t + " " + t for t in MIXED)]
    whole = Encoder(encoder_dir, provider="cpu", batch_size=64, call_cost_tokens=1e9)
    split = Encoder(encoder_dir, provider="cpu", batch_size=64, call_cost_tokens=0)
    assert split.call_cost_tokens == 0 and whole.call_cost_tokens == 1e9
    lengths = sorted(split.token_lengths(texts))
    assert len(length_groups(lengths, 0)) > 3  # the batch really is cut into several calls
    np.testing.assert_allclose(split.encode(texts), whole.encode(texts), atol=2e-5)


def test_cpu_encoder_cuts_batches_by_default(encoder_dir: Path) -> None:
    assert Encoder(encoder_dir, provider="cpu").call_cost_tokens == CPU_CALL_COST_TOKENS
    settings = Settings(data_dir=DATA_DIR, encoder_provider="cpu", encoder_call_cost_tokens=40)
    assert Encoder.from_settings(settings).call_cost_tokens == 40
    with pytest.raises(ValueError, match="call_cost_tokens"):
        Encoder(encoder_dir, provider="cpu", call_cost_tokens=-1)


def test_semantic_sanity(encoder: Encoder) -> None:
    query, shoes, cake = encoder.encode(
        ["running shoes", "trail running sneakers", "chocolate cake recipe"]
    )
    assert float(query @ shoes) > float(query @ cake) + 0.1


def test_cache_hits_and_identical_vectors(encoder_dir: Path) -> None:
    enc = Encoder(encoder_dir, provider="cpu", cache_size=2)
    keys, texts = ["a", "b", "a"], ["yoga mat", "gaming mouse", "yoga mat"]
    first = enc.encode_cached(keys, texts)
    assert (enc.cache_hits, enc.cache_misses) == (1, 2)  # the repeated key is encoded once
    second = enc.encode_cached(["b", "a"], ["gaming mouse", "yoga mat"])
    assert (enc.cache_hits, enc.cache_misses) == (3, 2)
    np.testing.assert_array_equal(second[0], first[1])
    np.testing.assert_array_equal(second[1], first[0])
    assert _cos(first[0], enc.encode(["yoga mat"])[0]) > 0.9999
    second[0] += 1.0  # callers own the returned array: the cache is not corrupted
    np.testing.assert_array_equal(enc.encode_cached(["b"], ["gaming mouse"])[0], first[1])
    enc.encode_cached(["c"], ["camping tent"])  # bounded: evicts the least recently used ("a")
    assert enc.cache_len == 2
    enc.encode_cached(["a"], ["yoga mat"])
    assert enc.cache_misses == 4


def test_a_vector_put_from_elsewhere_is_a_hit(encoder_dir: Path) -> None:
    """Another worker's vector (same fingerprint) goes into the cache: encode_cached of that key
    returns it and encodes nothing."""
    maker, taker = (Encoder(encoder_dir, provider="cpu", cache_size=4) for _ in range(2))
    assert maker.fingerprint == taker.fingerprint
    vec = maker.encode_cached(["i:tent:1"], ["camping tent"])[0]
    taker.cache_put("i:tent:1", vec)
    assert (taker.cache_hits, taker.cache_misses) == (0, 0)  # a put is neither
    got = taker.encode_cached(["i:tent:1", "i:mat:2"], ["camping tent", "yoga mat"])
    np.testing.assert_array_equal(got[0], vec)
    assert (taker.cache_hits, taker.cache_misses) == (1, 1)
    with pytest.raises(ValueError, match="dim"):
        taker.cache_put("bad", np.zeros(3, dtype=np.float32))


def test_fingerprint_tells_variants_and_token_limits_apart(
    encoder: Encoder, encoder_dir: Path
) -> None:
    variant, dim, max_tokens, digest = encoder.fingerprint.split(":")
    assert (variant, int(dim), int(max_tokens), len(digest)) == ("fp32", encoder.dim, 128, 16)
    longer = Encoder(encoder_dir, provider="cpu", max_tokens=256)
    assert longer.fingerprint == f"fp32:384:256:{digest}"  # long texts are cut elsewhere
    if (encoder_dir / "model.int8.onnx").exists():
        int8 = Encoder(encoder_dir, variant="int8", provider="cpu")
        assert int8.fingerprint.startswith("int8:384:128:")
        assert int8.fingerprint.split(":")[3] != digest


def test_cache_disabled(encoder_dir: Path) -> None:
    enc = Encoder(encoder_dir, provider="cpu", cache_size=0)
    enc.encode_cached(["k"], ["phone case"])
    enc.encode_cached(["k"], ["phone case"])
    assert (enc.cache_hits, enc.cache_misses, enc.cache_len) == (0, 2, 0)


def test_cache_argument_errors(encoder: Encoder) -> None:
    with pytest.raises(ValueError):
        encoder.encode_cached(["a", "b"], ["only one"])
    with pytest.raises(TypeError):
        encoder.encode("not a list")


def test_empty_input(encoder: Encoder) -> None:
    assert encoder.encode([]).shape == (0, encoder.dim)
    assert encoder.encode([]).dtype == np.float32
    assert encoder.encode_cached([], []).shape == (0, encoder.dim)


def test_long_text_truncated_not_rejected(encoder: Encoder) -> None:
    long = "the battery lasts all day and the camera is great " * 400
    assert encoder.token_lengths([long]) == [encoder.max_tokens]
    emb = encoder.encode([long, "short"])
    assert emb.shape == (2, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_chinese_text(encoder: Encoder) -> None:
    emb = encoder.encode(["这款跑步鞋非常轻便，适合长跑。", "请问明天北京的天气怎么样？"])
    assert np.all(np.isfinite(emb))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_tokenizer_matches_transformers(encoder: Encoder, encoder_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(encoder_dir, local_files_only=True)
    texts = [*MIXED, "Héllo WORLD 🔥 #tags", "long " * 300]
    expected = hf(texts, truncation=True, max_length=encoder.max_tokens)["input_ids"]
    got = [e.ids for e in encoder._tokenize(texts)]
    assert got == expected


def test_int8_variant_close_to_fp32(encoder: Encoder, encoder_dir: Path) -> None:
    if not (encoder_dir / "model.int8.onnx").exists():
        pytest.skip("int8 variant was not exported")
    int8 = Encoder(encoder_dir, variant="int8", provider="cpu")
    cos = np.sum(int8.encode(MIXED) * encoder.encode(MIXED), axis=1)
    assert float(cos.mean()) > 0.95


def test_from_settings(encoder_dir: Path) -> None:
    settings = Settings(data_dir=DATA_DIR, encoder_provider="cpu", encoder_batch_size=7)
    enc = Encoder.from_settings(settings)
    assert enc.provider == "CPUExecutionProvider"
    assert enc.batch_size == 7
    assert enc.model_dir == encoder_dir


def test_missing_dir_raises_encoder_error(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="crossprofile export-encoder"):
        Encoder(tmp_path / "nowhere")


def test_missing_variant_raises_encoder_error(encoder_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "encoder"
    model_dir.mkdir()
    for name in ("model.onnx", "tokenizer.json"):
        (model_dir / name).symlink_to(encoder_dir / name)
    with pytest.raises(EncoderError, match="--variants"):
        Encoder(model_dir, variant="fp16")


def test_corrupt_model_raises_encoder_error(encoder_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not an onnx model")
    (tmp_path / "tokenizer.json").symlink_to(encoder_dir / "tokenizer.json")
    with pytest.raises(EncoderError, match="cannot load ONNX model"):
        Encoder(tmp_path)


def test_cuda_sessions_leave_out_cudnn_flash_attention(
    encoder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an H100 cuDNN's flash attention built a graph per new batch shape (63 ms each); the
    CUDA provider is asked for every other attention kernel. No GPU here: capture the request."""
    import onnxruntime as ort

    import stream.encoder as enc

    asked: list[object] = []
    real = ort.InferenceSession

    def session(path: str, options: object, providers: list[object]) -> object:
        asked.append(providers)
        return real(path, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: [enc._CUDA, enc._CPU])
    monkeypatch.setattr(ort, "InferenceSession", session)
    Encoder(encoder_dir, provider="cuda", cache_size=0)
    (cuda, options), cpu = asked[0]  # type: ignore[misc]
    assert (cuda, cpu) == (enc._CUDA, enc._CPU)
    kernels = int(options["sdpa_kernel"])
    assert not kernels & enc._SDPA_CUDNN_FLASH
    assert kernels & enc._SDPA_FLASH and kernels & enc._SDPA_EFFICIENT and kernels & enc._SDPA_MATH
