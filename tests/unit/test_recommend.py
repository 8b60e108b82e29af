"""Multi-interest retrieval: consumed items filtered, interests all represented, reasons given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from stream.bench.index_bench import clustered, profile_of
from stream.models import Item
from stream.profile import InterestProfile
from stream.recommend import (
    ItemIndex,
    Signals,
    _dot,
    _quotas,
    covisit_observations,
    covisit_record,
    recommend_blended,
    recommend_blended_many,
)

DIM = 8


def vec(axis: int, jitter: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[axis] = 1.0
    v[(axis + 1) % DIM] = jitter
    return v / np.linalg.norm(v)


def build() -> tuple[ItemIndex, InterestProfile]:
    index = ItemIndex(DIM, capacity=2)  # grows
    for axis in range(4):
        for j in range(10):
            platforms = ("shop",) if axis == 3 else ()
            index.upsert(
                Item(f"i{axis}-{j}", title=f"T{axis}-{j}", platforms=platforms), vec(axis, j / 20)
            )
    profile = InterestProfile()
    for n in range(12):
        axis = 0 if n < 8 else 1  # a strong taste and a weaker one
        profile.learn_one(
            {
                "event_id": f"e{n}",
                "embedding": vec(axis, 0.0),
                "weight": 1.0,
                "ts": n,
                "platform": "video",
                "type": "view",
                "item_id": f"i{axis}-{n % 3}",
                "title": f"T{axis}-{n % 3}",
                "terms": [f"genre{axis}"],
            }
        )
    return index, profile


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 7, 8, 9])
def test_dot_is_the_matrix_product_for_any_row_count(m: int) -> None:
    """Matrix-vector products up to 3 rows, a zero-padded product beyond: the same numbers."""
    rng = np.random.default_rng(m)
    vectors = rng.standard_normal((50, 16)).astype(np.float32)
    rows = rng.standard_normal((m, 16)).astype(np.float32)
    got = _dot(rows, vectors)
    assert got.shape == (m, 50) and got.dtype == np.float32
    np.testing.assert_allclose(got, rows @ vectors.T, rtol=1e-5, atol=1e-5)


def test_consumed_items_are_filtered() -> None:
    index, profile = build()
    recs = index.recommend(profile, 10)
    assert len(recs) == 10
    ids = {r.item_id for r in recs}
    consumed = {f"i{axis}-{j}" for axis in (0, 1) for j in range(3)}  # what build() learned
    assert all(profile.has_consumed(i) for i in consumed)
    assert not ids & consumed


def test_every_interest_gets_slots_in_proportion() -> None:
    index, profile = build()
    recs = index.recommend(profile, 10)
    labels = [r.label for r in recs]
    assert labels.count("genre0") > labels.count("genre1") > 0


def test_each_item_has_a_reason() -> None:
    index, profile = build()
    for r in index.recommend(profile, 5):
        payload = r.to_json()
        assert payload["reason"]["label"].startswith("genre")
        assert payload["reason"]["exemplar"] is not None


def test_platform_filter() -> None:
    index, profile = build()
    profile.learn_one(
        {
            "event_id": "x",
            "embedding": vec(3, 0.0),
            "weight": 50.0,
            "ts": 99,
            "platform": "shop",
            "type": "purchase",
            "terms": ["genre3"],
        }
    )
    assert any(r.item_id.startswith("i3") for r in index.recommend(profile, 10, platform="shop"))
    assert not any(
        r.item_id.startswith("i3") for r in index.recommend(profile, 10, platform="video")
    )


def test_upsert_replaces_in_place() -> None:
    index, _ = build()
    n = len(index)
    index.upsert(Item("i0-0", title="new"), vec(2, 0.0))
    assert len(index) == n
    item = index.get("i0-0")
    assert item is not None and item.title == "new"


def test_empty_cases() -> None:
    index, profile = build()
    assert index.recommend(InterestProfile(), 5) == []
    assert ItemIndex(DIM).recommend(profile, 5) == []


def test_quotas() -> None:
    assert _quotas([1.0], 10) == [10]
    assert sum(_quotas([5.0, 1.0, 1.0, 1.0], 3)) == 3


def test_platform_masks_follow_upserts() -> None:
    """The cached per-platform masks equal a from-scratch computation after every kind of
    upsert: new rows (past the first capacity), platforms accumulating, 'everywhere' items."""
    rng = np.random.default_rng(4)
    index = ItemIndex(4, capacity=2)
    platforms = [(), ("shop",), ("video",), ("shop", "video")]

    def expected(platform: str) -> list[bool]:
        return [not it.platforms or platform in it.platforms for it in index._items]

    for n in range(40):
        item_id = f"i{rng.integers(0, 12)}"
        index.upsert(Item(item_id, platforms=platforms[n % 4]), rng.normal(size=4))
        for platform in ("shop", "video", "news"):
            assert index.allowed(platform).tolist() == expected(platform), (n, platform)
            scores = [0.0 if shown else -np.inf for shown in expected(platform)]
            assert index.blocked(platform).tolist() == scores, (n, platform)


def _histories() -> list[tuple[str, list[str]]]:
    rng = np.random.default_rng(9)
    return [
        (f"p{k}", [f"i{a}-{rng.integers(0, 10)}" for a in rng.integers(0, 4, 12)]) for k in range(6)
    ]


def test_covisit_records_shared_between_workers_give_the_same_evidence() -> None:
    """The stream's path (observation on the profile's worker -> JSON on the covisits topic ->
    count on every worker) ends where learning in one place does."""
    index, _ = build()
    local, remote = Signals(window=5), Signals(window=5)
    profiles = {pid: InterestProfile() for pid, _ in _histories()}
    ts = 0
    for pid, items in _histories():
        for item_id in items:
            ts += 60_000
            prof = profiles[pid]
            record = json.loads(json.dumps(local.observation(prof, item_id, ts)))
            local.learn(prof, index, item_id, ts)
            assert remote.count(index, record)
            prof.learn({"event_id": f"{pid}-{ts}", "item_id": item_id, "ts": ts})
    for prof in profiles.values():
        assert np.allclose(local.prior(prof, index), remote.prior(prof, index))
    assert not remote.count(index, {"item": "unknown", "ts": ts, "recent": []})  # retried later


def test_a_replayed_covisit_record_is_counted_once() -> None:
    """A crash between the covisits record and the profile's changelog write replays the event,
    and its record is written again: every worker must count it once."""
    index, _ = build()
    replayed, reference = Signals(window=5), Signals(window=5)
    prof = InterestProfile()
    for n, item_id in enumerate(["i0-1", "i0-2", "i0-3"]):
        record = json.loads(json.dumps(replayed.observation(prof, item_id, n, f"e{n}")))
        for signals in (replayed, reference):
            assert signals.count(index, record)
        if n == 2:  # the replay: the same event's record again
            assert replayed.count(index, record)
        prof.learn({"event_id": f"e{n}", "item_id": item_id, "ts": n})
    assert replayed.replays_skipped == 1 and reference.replays_skipped == 0
    assert np.array_equal(replayed.prior(prof, index), reference.prior(prof, index))
    # records without an event id (written before it was added) are counted as they come
    legacy = {"item": "i0-1", "ts": 9, "repeat": False, "recent": []}
    assert replayed.count(index, legacy) and replayed.count(index, legacy)
    assert replayed.replays_skipped == 1


def test_a_batch_record_carries_the_same_evidence_as_single_records() -> None:
    """The worker sends a batch's observations as one covisits record; a reader counts them as
    it counts single records (which older topics still hold)."""
    index, _ = build()
    batched, single = Signals(window=5), Signals(window=5)
    prof = InterestProfile()
    records = []
    for n, item_id in enumerate(["i0-1", "i1-2", "i0-3", "i2-4"]):
        records.append(single.observation(prof, item_id, n * 60_000, f"e{n}"))
        prof.learn({"event_id": f"e{n}", "item_id": item_id, "ts": n * 60_000})
    for rec in records:
        assert covisit_observations(json.loads(json.dumps(rec))) == [rec]
        assert single.count(index, rec)
    wire = (
        json.loads(json.dumps(covisit_record(records[:2]))),
        json.loads(json.dumps(covisit_record(records[2:]))),
    )
    for rec in wire:
        for obs in covisit_observations(rec):
            assert batched.count(index, obs)
    assert np.array_equal(batched.prior(prof, index), single.prior(prof, index))


def test_the_replay_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stream.recommend.COUNTED_EVENTS_KEPT", 3)
    signals = Signals()
    assert all(signals._first_time(e) for e in range(6))
    assert not signals._first_time(5) and not signals._first_time(3)  # the last two generations
    assert signals._first_time(0)  # forgotten: three generations ago
    assert len(signals._counted) + len(signals._counted_before) <= 6


def test_signals_stop_at_max_items() -> None:
    index, profile = build()
    signals = Signals(max_items=5)
    for n, item_id in enumerate(["i0-1", "i3-9", "i0-2", "i3-8"]):  # rows 1, 39, 2, 38
        signals.learn(profile, index, item_id, ts=n)
    prior = signals.prior(profile, index)
    assert prior.shape == (len(index),)
    assert not prior[5:].any()  # rows past the cap: no popularity, no co-visits
    assert prior[1] > 0 and prior[2] > 0


def test_signals_never_copy_their_matrix_as_items_arrive() -> None:
    """The co-visit matrix is reserved whole: counting item after item never replaces it (a copy
    from 8,192 to 10,000 rows was a ~0.4 s stall of the worker's event loop), and the evidence is
    the one a small dense matrix holds."""
    index = ItemIndex(DIM)
    signals = Signals(window=3, max_items=3_000)
    matrix = signals._co
    prof = InterestProfile()
    for n in range(2_100):  # past every size the matrix used to double through (1,024, 2,048)
        item_id = f"x{n}"
        index.upsert(Item(item_id), vec(n % DIM, 0.1))
        signals.learn(prof, index, item_id, ts=n)
        prof.learn({"event_id": f"e{n}", "item_id": item_id, "ts": n})
    assert signals._co is matrix and matrix.shape == (3_000, 3_000)
    last = index.row("x2099")
    assert last is not None
    # the last item went with the three before it, the nearest weighing most
    assert matrix[last, last - 3 : last].tolist() == pytest.approx([0.81, 0.9, 1.0])
    assert not matrix[last, : last - 3].any() and not matrix[last, last:].any()


def test_the_popularity_share_of_the_prior_follows_every_count() -> None:
    """Popularity is computed once for everyone until the next count, never served stale."""
    index, profile = build()
    signals = Signals(collaborative=0.0)
    signals.learn(profile, index, "i0-1", ts=0)
    first = signals.prior(None, index)
    first[:] = 7.0  # a caller's copy: the shared share is untouched
    assert signals.prior(None, index)[index.row("i0-1")] == pytest.approx(0.3)
    for n in range(3):
        signals.learn(profile, index, "i1-2", ts=n + 1)
    now = signals.prior(None, index)
    assert now[index.row("i1-2")] == pytest.approx(0.3) and now[index.row("i0-1")] < 0.3
    index.upsert(Item("new"), vec(0, 0.5))
    assert signals.prior(None, index).shape == (len(index),)  # a row more: computed again


def test_blended_ranking_serves_the_prior_when_no_interest_exists_yet() -> None:
    """A person whose only event was negative has no interest; they still get the items with
    evidence (never their own, only those allowed on the platform), labelled as such."""
    index, _ = build()
    signals = Signals()
    others = InterestProfile()
    for n, item_id in enumerate(["i2-1", "i2-1", "i2-2", "i1-4", "i3-0"]):  # i3-*: shop only
        signals.learn(others, index, item_id, ts=n)
        others.learn({"event_id": f"o{n}", "item_id": item_id, "ts": n})
    newcomer = InterestProfile()
    newcomer.learn(
        {"event_id": "x", "embedding": vec(2, 0.0), "weight": -1.0, "ts": 5, "item_id": "i2-1"}
    )
    assert newcomer.n_interests == 0
    recs = recommend_blended(index, newcomer, signals, 5, now=5)
    assert [r.item_id for r in recs] == ["i2-2", "i1-4", "i3-0"]  # i2-1 is hers; no others
    assert all(r.label == "popular" for r in recs)
    on_video = recommend_blended(index, newcomer, signals, 5, now=5, platform="video")
    assert [r.item_id for r in on_video] == ["i2-2", "i1-4"]


def _twin_indexes(vectors: np.ndarray) -> tuple[ItemIndex, ItemIndex]:
    """The same items in an exact index and in one that always takes HNSW candidates."""
    exact, ann = ItemIndex(vectors.shape[1]), ItemIndex(vectors.shape[1], ann_min_items=1)
    for i, v in enumerate(vectors):
        item = Item(f"i{i}", title=f"T{i}", platforms=("shop",) if i % 10 == 0 else ())
        exact.upsert(item, v)
        ann.upsert(item, v)
    return exact, ann


def test_hnsw_candidates_rank_as_the_exact_index_does() -> None:
    vectors = clustered(3_000, 32, seed=3, clusters=12)
    exact, ann = _twin_indexes(vectors)
    rng = np.random.default_rng(5)
    overlaps = []
    for _ in range(25):
        profile = profile_of(vectors, [int(r) for r in rng.integers(len(vectors), size=6)])
        want = [r.item_id for r in exact.recommend(profile, 10)]
        got = [r.item_id for r in ann.recommend(profile, 10)]
        assert len(got) == 10 and not {i for i in got if profile.has_consumed(i)}
        overlaps.append(len(set(want) & set(got)) / 10)
    assert float(np.mean(overlaps)) >= 0.95, overlaps


def test_hnsw_candidates_for_a_single_interest() -> None:
    vectors = clustered(2_000, 32, seed=3, clusters=12)
    exact, ann = _twin_indexes(vectors)
    profile = profile_of(vectors, [42])
    assert len(profile.interests()) == 1
    want = [r.item_id for r in exact.recommend(profile, 10)]
    assert [r.item_id for r in ann.recommend(profile, 10)] == want


def test_hnsw_candidates_include_what_the_prior_lifts() -> None:
    vectors = clustered(2_000, 32, seed=3, clusters=12)
    exact, ann = _twin_indexes(vectors)
    profile = profile_of(vectors, [1, 2, 3])
    far = int(np.argmin(vectors @ vectors[1]))  # the least similar item to the taste
    prior = np.zeros(len(vectors), dtype=np.float32)
    prior[far] = 5.0  # overwhelming co-visit evidence
    got = [r.item_id for r in ann.recommend(profile, 10, prior=prior)]
    assert got[0] == f"i{far}"
    assert got == [r.item_id for r in exact.recommend(profile, 10, prior=prior)]


def test_hnsw_falls_back_to_every_item_when_filters_leave_too_few() -> None:
    vectors = clustered(2_000, 32, seed=3, clusters=12)
    exact, ann = _twin_indexes(vectors)  # every tenth item is shop-only
    profile = profile_of(vectors, [5, 6, 7])
    # all shop-only items are allowed on shop; the graph's nearest neighbours are mostly not
    want = [r.item_id for r in exact.recommend(profile, 10, platform="news")]
    assert [r.item_id for r in ann.recommend(profile, 10, platform="news")] == want
    shop = [r.item_id for r in ann.recommend(profile, 10, platform="shop")]
    assert shop == [r.item_id for r in exact.recommend(profile, 10, platform="shop")]


def test_hnsw_follows_an_item_whose_vector_changed() -> None:
    vectors = clustered(1_000, 32, seed=3, clusters=12)
    exact, ann = _twin_indexes(vectors)
    profile = profile_of(vectors, [10, 11])
    moved = int(np.argmin(vectors @ vectors[10]))
    assert f"i{moved}" not in {r.item_id for r in ann.recommend(profile, 10)}
    for index in (exact, ann):  # now a twin of a liked item
        index.upsert(Item(f"i{moved}", title="rewritten"), vectors[10])
    got = [r.item_id for r in ann.recommend(profile, 10)]
    assert f"i{moved}" in got and got == [r.item_id for r in exact.recommend(profile, 10)]
    assert len(ann) == 1_000


def test_the_same_vector_again_keeps_the_graph_node() -> None:
    """An item coming back with its own vector (from the items topic, or on a new platform)
    updates the item and its platforms, not the HNSW graph; a new vector moves the node."""
    vectors = clustered(50, 16, seed=4, clusters=3)
    index = ItemIndex(16, ann_min_items=1)
    for i, v in enumerate(vectors):
        index.upsert(Item(f"i{i}", platforms=("shop",)), v)
    added: list[int] = []
    graph = index._ann
    real_add = graph.add

    def spy(key: object, vector: np.ndarray, **kw: object) -> object:
        added.append(int(str(key)))
        return real_add(key, vector, **kw)

    graph.add = spy
    index.upsert(Item("i3", title="again", platforms=("news",)), vectors[3].copy())
    assert added == []
    item = index.get("i3")
    assert item is not None and item.title == "again"
    assert bool(index.allowed("news")[3]) and not bool(index.allowed("news")[4])
    index.upsert(Item("i3", platforms=("news",)), vectors[7])
    assert added == [3]


def _blend_fixture() -> tuple[np.ndarray, ItemIndex, ItemIndex, Signals, list[InterestProfile]]:
    vectors = clustered(1_500, 32, seed=11, clusters=10)
    exact, ann = _twin_indexes(vectors)
    signals = Signals(window=5)
    rng = np.random.default_rng(12)
    profiles: list[InterestProfile] = []
    for _ in range(12):
        rows = [int(r) for r in rng.integers(len(vectors), size=int(rng.integers(1, 15)))]
        profile = profile_of(vectors, rows)
        for r in rows:
            signals.learn(profile, exact, f"i{r}", len(profiles) * 100 + r)
        profiles.append(profile)
    return vectors, exact, ann, signals, profiles


def test_ranking_many_together_gives_each_ones_own_answer() -> None:
    """One matrix product for a batch's persons ranks exactly as one pass per person does."""
    _, exact, ann, signals, profiles = _blend_fixture()
    requests: list[tuple[InterestProfile | None, str | None, int | None]] = [
        (p, ("shop", None, "video")[i % 3], p.updated_at) for i, p in enumerate(profiles)
    ]
    requests += [(None, None, None), (InterestProfile(), "shop", None)]  # no profile, no interest
    for index in (exact, ann):
        together = recommend_blended_many(index, requests, signals, 10)
        alone = [
            recommend_blended(index, prof, signals, 10, now=now, platform=platform)
            for prof, platform, now in requests
        ]
        assert [[r.item_id for r in rs] for rs in together] == [
            [r.item_id for r in rs] for rs in alone
        ]
        for a, b in zip(together, alone, strict=True):
            assert np.allclose([r.score for r in a], [r.score for r in b], atol=1e-5)
            assert [(r.interest, r.label) for r in a] == [(r.interest, r.label) for r in b]
    assert exact.exact() and not ann.exact()


def test_precomputed_cosines_of_the_wrong_shape_are_not_used() -> None:
    _, exact, _, _, profiles = _blend_fixture()
    profile = profiles[0]
    want = [r.item_id for r in exact.recommend(profile, 10)]
    wrong = np.zeros((len(exact.active_interests(profile)) + 1, len(exact)), dtype=np.float32)
    assert [r.item_id for r in exact.recommend(profile, 10, dots=wrong)] == want
    right = exact.cosines(np.stack([i.centroid for i in exact.active_interests(profile)]))
    assert [r.item_id for r in exact.recommend(profile, 10, dots=right)] == want


# --- the HNSW graph's build -----------------------------------------------------------------------


def test_no_graph_below_the_threshold_and_a_small_one_is_built_at_once() -> None:
    vectors = clustered(300, 16, seed=5, clusters=6)
    index = ItemIndex(16, ann_min_items=200)
    for i, v in enumerate(vectors[:199]):
        index.upsert(Item(f"i{i}"), v)
    assert index.graph_state() == "waiting" and index.exact()  # no graph kept at all
    index.upsert(Item("i199"), vectors[199])  # the 200th: under GRAPH_BUILD_INLINE_MAX, at once
    assert index.graph_state() == "ready" and not index.exact()
    for i, v in enumerate(vectors[200:], start=200):
        index.upsert(Item(f"i{i}"), v)
    assert len(index._ann) == 300  # kept current from then on
    assert ItemIndex(16).graph_state() == "off"


def _exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    return [int(r) for r in np.argsort(-(vectors @ query), kind="stable")[:k]]


class _GatedGraph:
    """A real usearch graph whose bulk adds (the background rounds) wait for ``gate``."""

    def __init__(self, graph: object, gate: threading.Event) -> None:
        self._graph, self._gate = graph, gate

    def add(self, keys: object, vectors: np.ndarray, **kw: object) -> object:
        if np.ndim(vectors) == 2:
            self._gate.wait(30)
        return self._graph.add(keys, vectors, **kw)  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self._graph)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self._graph, name)


def test_a_big_graph_is_built_in_the_background_while_answers_stay_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past GRAPH_BUILD_INLINE_MAX items the graph is built off the caller's thread: items keep
    arriving (more than one catch-up's worth, so a second round runs), one item's vector changes
    while its old one is being added, and once ready the graph holds every row with its current
    vector."""
    from stream import recommend

    gate = threading.Event()  # the first round waits until the test has sent the arrivals
    real = recommend._new_graph
    monkeypatch.setattr(recommend, "_new_graph", lambda dim: _GatedGraph(real(dim), gate))
    n = recommend.GRAPH_BUILD_INLINE_MAX + 500
    vectors = clustered(n + 2 * recommend.GRAPH_CATCH_UP_MAX, 16, seed=6, clusters=8)
    index = ItemIndex(16, ann_min_items=n)
    profile = profile_of(vectors, [1, 2, 3])
    for i in range(n):
        index.upsert(Item(f"i{i}"), vectors[i])
    assert index.graph_state() == "building"
    assert index.exact()  # every item scored until the graph is ready
    want = [r.item_id for r in ItemIndex.recommend(index, profile, 10)]
    assert index.ann_answers == 0
    moved = 5
    vectors[moved] = -vectors[moved]  # a new text for an item already handed to the builder
    index.upsert(Item(f"i{moved}"), vectors[moved])
    for i in range(n, len(vectors)):  # arrivals during the build
        index.upsert(Item(f"i{i}"), vectors[i])
    gate.set()
    assert not index.wait_for_graph(60)  # the arrivals need a round of their own ...
    assert index.graph_state() == "building"
    assert index.wait_for_graph(60)  # ... and after it, few enough are left to add at once
    assert index.graph_state() == "ready" and not index.exact()
    graph = index._ann
    assert len(graph) == len(vectors)
    for row in (0, moved, n - 1, n, len(vectors) - 1):  # every row findable by its own vector
        found = graph.search(vectors[row], 1)
        assert int(found.keys[0]) == row
    got = [r.item_id for r in index.recommend(profile, 10)]
    assert index.ann_answers == 1
    exact = ItemIndex(16)
    for i, v in enumerate(vectors):
        exact.upsert(Item(f"i{i}"), v)
    assert got == [r.item_id for r in exact.recommend(profile, 10)]
    assert want  # the answers during the build were exact ones (checked against their index)


def test_a_failed_background_build_leaves_the_index_exact_and_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stream import recommend

    n = recommend.GRAPH_BUILD_INLINE_MAX + 10
    vectors = clustered(n + 1, 16, seed=7, clusters=4)
    real = recommend._new_graph
    failures = [False, True]  # popped from the end: the first graph fails, the second works

    class Broken:
        def add(self, *args: object, **kw: object) -> None:
            raise MemoryError("no room for the graph")

    monkeypatch.setattr(
        recommend, "_new_graph", lambda dim: Broken() if failures.pop() else real(dim)
    )
    index = ItemIndex(16, ann_min_items=n)
    for i in range(n):
        index.upsert(Item(f"i{i}"), vectors[i])
    assert not index.wait_for_graph(30)  # the round failed: reported, the index exact again
    assert index.graph_state() == "waiting"
    index.upsert(Item(f"i{n}"), vectors[n])  # the next step starts over, with a working graph
    assert index.graph_state() == "building" and index.exact()
    assert index.wait_for_graph(60) and len(index._ann) == n + 1


class _RecordingGraph(_GatedGraph):
    """A real usearch graph that records, per bulk add, its rows and the calling thread's
    niceness."""

    def __init__(self, graph: object) -> None:
        gate = threading.Event()
        gate.set()
        super().__init__(graph, gate)
        self.calls: list[tuple[int, int]] = []

    def add(self, keys: object, vectors: np.ndarray, **kw: object) -> object:
        if np.ndim(vectors) == 2:
            nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            self.calls.append((len(vectors), nice))
        return super().add(keys, vectors, **kw)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_background_rounds_yield_the_cpu_and_go_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A background round runs at GRAPH_BUILD_NICE (the encoder and the event loop keep their
    cores) and calls usearch GRAPH_BUILD_CHUNK rows at a time; the caller's thread keeps its
    priority."""
    from stream import recommend

    graphs: list[_RecordingGraph] = []

    def recording(dim: int) -> _RecordingGraph:
        graphs.append(_RecordingGraph(real(dim)))
        return graphs[-1]

    real = recommend._new_graph
    monkeypatch.setattr(recommend, "_new_graph", recording)
    n = recommend.GRAPH_BUILD_INLINE_MAX + recommend.GRAPH_BUILD_CHUNK + 7
    vectors = clustered(n, 16, seed=8, clusters=4)
    index = ItemIndex(16, ann_min_items=n)
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    for i in range(n):
        index.upsert(Item(f"i{i}"), vectors[i])
    assert index.wait_for_graph(60) and len(index._ann) == n
    (graph,) = graphs
    assert [rows for rows, _ in graph.calls] == [recommend.GRAPH_BUILD_CHUNK] * (
        n // recommend.GRAPH_BUILD_CHUNK
    ) + [n % recommend.GRAPH_BUILD_CHUNK]
    assert {nice for _, nice in graph.calls} == {max(before, recommend.GRAPH_BUILD_NICE)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_a_process_exiting_during_a_background_build_exits_cleanly(tmp_path: Path) -> None:
    """A daemon thread still inside usearch at interpreter exit used to abort the process (exit
    code 134, "terminate called without an active exception"); the round now stops at its next
    chunk and the exit is clean."""
    script = tmp_path / "exit_during_build.py"
    script.write_text(
        "import numpy as np\n"
        "from stream.models import Item\n"
        "from stream.recommend import ItemIndex\n"
        "index = ItemIndex(384, ann_min_items=5000)\n"
        "v = np.random.default_rng(1).normal(size=(6000, 384)).astype(np.float32)\n"
        "for i in range(6000):\n"
        "    index.upsert(Item(f'i{i}'), v[i])\n"
        "index.wait_for_graph(30)  # the first round; the arrivals' round ends during the exit\n"
        "print(index.graph_state())\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "terminate called" not in done.stderr
