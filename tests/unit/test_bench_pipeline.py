"""The pure parts of ``crossprofile bench pipeline``: streams, rate/percentile maths, state size.

No broker, no worker: the end-to-end run is in ``tests/integration/test_bench_pipeline_run.py``.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from stream.bench import cli as bench_cli
from stream.bench.in_process import pure_costs, state_sizes
from stream.bench.pipeline_bench import QUICK, Options, build_parser, format_table, options
from stream.bench.stats import (
    backlog_target,
    interval_rates,
    percentiles,
    quantile_interval,
    ratio,
    sustained_rate,
    targets,
)
from stream.bench.streams import (
    EventStream,
    ZipfSampler,
    distinct_texts,
    unique_items,
    zipf_items,
)
from stream.faust_compat import PROFILE_CODEC
from stream.ingest import Rejection, parse_event
from stream.settings import Settings

# --- streams -------------------------------------------------------------------------------------


def test_zipf_sampler_is_deterministic_per_seed() -> None:
    a = ZipfSampler(10_000, 1.1, seed=5).sample(2_000)
    b = ZipfSampler(10_000, 1.1, seed=5).sample(2_000)
    c = ZipfSampler(10_000, 1.1, seed=6).sample(2_000)
    assert (a == b).all()
    assert not (a == c).all()
    assert a.min() >= 0 and a.max() < 10_000


def test_zipf_sampler_follows_the_law() -> None:
    sampler = ZipfSampler(10_000, 1.1, seed=1)
    assert sampler.probabilities.sum() == pytest.approx(1.0)
    assert sampler.probabilities[0] / sampler.probabilities[1] == pytest.approx(2**1.1)
    draws = sampler.sample(200_000)
    counts = Counter(int(r) for r in draws)
    assert counts[0] / len(draws) == pytest.approx(sampler.probabilities[0], rel=0.05)
    distinct = len(counts)
    assert distinct == pytest.approx(sampler.expected_distinct(len(draws)), rel=0.05)


@pytest.mark.parametrize(("n", "s"), [(0, 1.1), (10, 0.0), (10, -1.0)])
def test_zipf_sampler_validates(n: int, s: float) -> None:
    with pytest.raises(ValueError):
        ZipfSampler(n, s, seed=0)


def test_distinct_texts_chain_seeds_past_one_seeds_supply() -> None:
    texts = distinct_texts(45_000)
    assert len(texts) == len(set(texts)) == 45_000
    assert distinct_texts(1_000) == texts[:1_000]


def test_unique_stream_events_are_valid_and_never_repeat_an_item_or_text() -> None:
    texts = distinct_texts(300)
    stream = EventStream("unique", unique_items(texts), users=50, seed=3)
    events = [next(stream) for _ in range(300)]
    parsed = [parse_event(e.value, max_chars=2000) for e in events]
    assert not [p for p in parsed if isinstance(p, Rejection)]
    assert len({e.event_id for e in events}) == 300
    assert len({e.embed_text for e in events}) == 300
    assert len({json.loads(e.value)["item"]["id"] for e in events}) == 300
    # the key is the account, as platform producers send it
    first = json.loads(events[0].value)
    assert events[0].key == f"{first['platform']}:{first['user_id']}".encode()


def test_zipf_stream_reuses_stable_item_ids_and_texts() -> None:
    titles = distinct_texts(1_000)
    sampler = ZipfSampler(1_000, 1.1, seed=2)
    stream = EventStream("zipf", zipf_items(titles, sampler), users=20, seed=2)
    events = [json.loads(next(stream).value) for _ in range(2_000)]
    by_id: dict[str, str] = {}
    for ev in events:
        item = ev["item"]
        assert by_id.setdefault(item["id"], item["title"]) == item["title"]
    assert len(by_id) < 1_000
    top = Counter(ev["item"]["id"] for ev in events).most_common(1)[0][0]
    assert top == "z-0"


def test_embed_text_is_what_the_worker_embeds() -> None:
    from stream.models import Event

    stream = EventStream("unique", unique_items(distinct_texts(5)), users=5, seed=0)
    ev = next(stream)
    parsed = parse_event(ev.value, max_chars=2000)
    assert isinstance(parsed, Event)
    assert parsed.embed_text() == ev.embed_text


# --- maths ---------------------------------------------------------------------------------------


def test_sustained_rate_uses_the_window_only() -> None:
    samples = [(0.0, 0), (1.0, 10), (2.0, 110), (3.0, 210), (4.0, 310), (5.0, 311)]
    assert sustained_rate(samples, 1.0, 4.0) == pytest.approx(100.0)
    assert sustained_rate(samples, 1.5, 3.5) == pytest.approx(100.0)
    assert sustained_rate(samples, 4.5, 4.9) is None
    assert interval_rates(samples, 1.0, 4.0, 1.0) == pytest.approx([100.0, 100.0, 100.0])


def test_percentiles_match_numpy() -> None:
    values = list(np.random.default_rng(0).exponential(50.0, size=1_000))
    got = percentiles(values)
    assert got["n"] == 1_000
    assert got["p50"] == pytest.approx(np.percentile(values, 50), abs=0.05)
    assert got["p99"] == pytest.approx(np.percentile(values, 99), abs=0.05)
    assert percentiles([7.0]) == {"p50": 7.0, "p99": 7.0, "n": 1}


def test_backlog_and_ratio() -> None:
    assert backlog_target(None, 4.0, 50) == 50
    assert backlog_target(200.0, 4.0, 50) == 800
    assert ratio(30.0, 60.0) == 0.5
    assert ratio(None, 60.0) is None and ratio(1.0, 0.0) is None


def test_targets_met_and_not_met() -> None:
    report = {
        "ratios": {"pipeline_unique_vs_encoder": 0.9, "pipeline_zipf_vs_encoder": 2.0},
        "latency": {"latency_ms": {"p99": 120.0}},
        "state_bytes_per_person": {"10": {"codec_bytes": 900}, "1000": {"codec_bytes": 5000}},
    }
    t = targets(report)
    assert t["pipeline_unique_vs_encoder_ge"]["met"] is True
    assert t["pipeline_zipf_vs_encoder_ge"]["met"] is False
    assert t["p99_latency_ms_lt"]["met"] is True
    assert t["p99_latency_ms_lt"]["clear"] is None  # no interval: cannot tell
    assert t["state_bytes_per_person_le"] == {"value": 5000, "target": 4096, "met": False}
    for interval, clear in (
        ([100.0, 180.0], True),
        ([200.0, 300.0], None),
        ([251.0, 400.0], False),
    ):
        report["latency"]["latency_p99_ci95_ms"] = interval
        assert targets(report)["p99_latency_ms_lt"]["clear"] is clear


def test_the_p99_interval_holds_the_true_p99_as_often_as_it_says() -> None:
    """Order-statistic interval: over many samples of a known law it covers the true quantile
    at least 95 % of the time, and it is no wider than it must be (under 99 % here)."""
    rng = np.random.default_rng(1)
    true_p99 = 50.0 * np.log(100.0)  # exponential, mean 50 ms
    covered = 0
    for _ in range(400):
        lo, hi = quantile_interval(list(rng.exponential(50.0, size=600)), 0.99)
        assert lo is not None and hi is not None and lo <= hi
        covered += lo <= true_p99 <= hi
    assert 0.95 * 400 <= covered < 0.99 * 400
    assert quantile_interval([], 0.99) == (None, None)
    assert quantile_interval([5.0] * 400, 0.99) == (5.0, 5.0)
    with pytest.raises(ValueError):
        quantile_interval([1.0], 1.0)


# --- state size ----------------------------------------------------------------------------------


def test_state_sizes_are_the_tables_pickle_bytes() -> None:
    import pickle

    from faust.serializers import codecs

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(64, 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sizes = state_sizes(emb, Settings(), checkpoints=(10, 100))
    assert set(sizes) == {"10", "100"}
    for s in sizes.values():
        assert 0 < s["pickle_bytes"] <= s["codec_bytes"]
    # the profile table's codec writes plain pickle bytes (Faust's "pickle" adds base64)
    assert codecs.dumps(PROFILE_CODEC, {"x": 1}) == pickle.dumps({"x": 1})
    with pytest.raises(ValueError):
        state_sizes(emb[:0], Settings())


def test_pure_costs_break_an_event_down() -> None:
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(50, 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    got = pure_costs(emb, Settings(), events=30, persons=5)
    ms = got["ms_per_event"]
    assert set(ms) == {"learn", "recommend", "serialise", "total"}
    assert ms["total"] == pytest.approx(ms["learn"] + ms["recommend"] + ms["serialise"], abs=0.01)
    assert got["index_items"] == 50 and got["ceiling_events_per_s"] > 0


# --- command line --------------------------------------------------------------------------------


def test_options_defaults_quick_and_overrides() -> None:
    parser = build_parser()
    assert options(parser.parse_args([]), parser) == Options()
    assert options(parser.parse_args(["--quick"]), parser) == QUICK
    got = options(parser.parse_args(["--quick", "--window", "7", "--zipf-s", "1.3"]), parser)
    assert got.window_s == 7.0 and got.zipf_s == 1.3 and got.quick
    with pytest.raises(SystemExit):
        options(parser.parse_args(["--window", "0"]), parser)
    assert options(parser.parse_args(["--workers", "3"]), parser).workers == 3
    assert options(parser.parse_args(["--zipf-prewarm", "500"]), parser).zipf_prewarm == 500
    with pytest.raises(SystemExit):
        options(parser.parse_args(["--zipf-prewarm", "-1"]), parser)
    with pytest.raises(SystemExit):
        options(parser.parse_args(["--workers", "0"]), parser)


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_cli.main(["pipeline", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "crossprofile bench pipeline --json" in out
    assert "--quick" in out and "CROSSPROFILE_" in out
    assert "pipeline" in bench_cli.BENCHMARKS


def test_hop_split_adds_up_and_skips_events_missing_a_stage() -> None:
    from stream.bench.hops import HOPS, split

    sent = {"a": 0.0, "b": 100.0, "c": 200.0}
    resolved = {"a": 10.0, "b": 104.0, "c": 201.0}
    routed = {"a": 30.0, "b": 110.0}  # c never reached identity's output
    generated = {"a": 70.0, "b": 150.0}
    read = {"a": 75.0, "b": 170.0}
    r = split(sent, resolved, routed, generated, read)
    assert (r["events"], r["events_missing_a_stage"]) == (2, 1)
    assert list(r["hops_ms"]) == list(HOPS)
    p50 = {h: r["hops_ms"][h]["p50"] for h in HOPS}
    assert p50 == {
        "to_ingest_output": 7.0,
        "ingest_to_identity_output": 13.0,
        "identity_to_recommendation": 40.0,
        "recommendation_to_reader": 12.5,
    }
    assert sum(p50.values()) == (75.0 + 70.0) / 2  # the hops add up to the latency
    assert r["identity_inline"] == 0
    # b's person resolved inside ingest (no resolve record): one hop for both, still adding up
    r = split(sent, {"a": 10.0}, routed, generated, read)
    assert (r["events"], r["identity_inline"]) == (2, 1)
    assert r["hops_ms"]["ingest_to_identity_output"]["p50"] == (20.0 + 0.0) / 2
    assert sum(r["hops_ms"][h]["p50"] for h in HOPS) == (75.0 + 70.0) / 2
    assert r["profile_inline"] == 0
    # a learned by the worker that resolved it (no persons record), b also resolved in ingest
    r = split(sent, resolved, {"b": 110.0}, generated, read)
    assert (r["events"], r["profile_inline"], r["identity_inline"]) == (2, 1, 0)
    assert r["hops_ms"]["identity_to_recommendation"]["p50"] == (60.0 + 40.0) / 2
    r = split(sent, {}, {}, generated, read)
    assert (r["events"], r["profile_inline"], r["identity_inline"]) == (2, 2, 2)
    assert r["hops_ms"]["to_ingest_output"]["p50"] == 0.0
    assert sum(r["hops_ms"][h]["p50"] for h in HOPS) == (75.0 + 70.0) / 2


def test_hop_reader_finds_the_event_in_both_internal_record_shapes() -> None:
    from stream.bench.hops import _event_id

    assert _event_id(b'{"event_id": "e1", "type": "view"}') == "e1"
    assert _event_id(b'{"kind": "event", "person": "p", "event": {"event_id": "e2"}}') == "e2"
    assert _event_id(b'{"kind": "merge_out", "person": "p", "into": "q"}') is None
    assert _event_id(b"not json") is None
    assert _event_id(None) is None


def test_the_table_names_the_inline_hop_and_prints_the_slices() -> None:
    """A run where every event was resolved and learned where it came in has no internal hops:
    the table says so instead of printing two hops of 0 ms; the paced slices get a line."""
    path = Path(__file__).resolve().parents[2] / "docs" / "bench-pipeline.json"
    report = json.loads(path.read_text())
    by_hop = report["latency"]["by_hop"]
    assert by_hop["identity_inline"] == by_hop["profile_inline"] == by_hop["events"] > 0
    table = format_table(report)
    assert "  send_to_recommendation p50 / p99 (ms)" in table
    assert "to_ingest_output" not in table
    assert "p50 / p99 by 10-s slice (ms): " in table

    routed = copy.deepcopy(report)
    routed["latency"]["by_hop"]["profile_inline"] = 0  # the persons topic crossed
    table = format_table(routed)
    assert "send_to_recommendation" not in table
    for hop in ("to_ingest_output", "ingest_to_identity_output", "identity_to_recommendation"):
        assert f"  {hop} p50 / p99 (ms)" in table
