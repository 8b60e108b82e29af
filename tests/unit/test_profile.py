"""The profile follows river's contract and passes river-style generic checks."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest

from stream.profile import InterestProfile

DIM = 16
DAY = 86_400_000


def unit(i: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = np.zeros(DIM, dtype=np.float32)
    v[i] = 1.0
    v += rng.normal(scale=noise, size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def obs(n: int, axis: int, *, w: float = 1.0, ts: int | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "event_id": f"e{n}",
        "embedding": unit(axis, 0.05, seed=n),
        "weight": w,
        "ts": n * 1000 if ts is None else ts,
        "platform": kw.get("platform", "shop"),
        "type": "view",
        "item_id": f"item-{axis}-{n}",
        "title": f"Item {axis}/{n}",
        "terms": kw.get("terms", [f"cat{axis}"]),
    }


def trained(n: int = 60, axes: int = 3) -> InterestProfile:
    p = InterestProfile(max_interests=4)
    for i in range(n):
        p.learn_one(obs(i, i % axes))
    return p


def test_constructor_validates_eagerly() -> None:
    with pytest.raises(ValueError, match="half_life_days must be greater than 0"):
        InterestProfile(half_life_days=0)
    with pytest.raises(ValueError):
        InterestProfile(max_interests=0)


def test_predict_before_learn() -> None:
    assert InterestProfile().predict_one({"embedding": unit(0)}) == 0
    assert InterestProfile().interests() == []


def test_finds_one_interest_per_taste() -> None:
    p = trained()
    assert p.n_interests == 3
    labels = sorted(i.label for i in p.interests())
    assert labels == ["cat0", "cat1", "cat2"]
    assert p.predict_one({"embedding": unit(1)}) == p.predict_one(obs(1, 1))


def test_bounded_interests_whatever_the_history() -> None:
    p = InterestProfile(max_interests=4)
    for i in range(400):
        p.learn_one(obs(i, i % DIM))
    assert p.n_interests <= 4
    assert len(pickle.dumps(p)) < len(pickle.dumps(trained(400, DIM))) * 2


def test_duplicate_event_changes_nothing() -> None:
    p = trained()
    before = pickle.dumps(p)
    assert p.learn(obs(5, 2)) is False
    assert pickle.dumps(p) == before


def test_input_not_mutated() -> None:
    x = obs(1, 1)
    snapshot = copy.deepcopy(x)
    InterestProfile().learn_one(x)
    assert x.keys() == snapshot.keys()
    assert np.array_equal(x["embedding"], snapshot["embedding"])


def test_pickle_round_trip_predicts_the_same() -> None:
    p = trained()
    q = pickle.loads(pickle.dumps(p))
    for axis in range(3):
        assert q.predict_one({"embedding": unit(axis)}) == p.predict_one({"embedding": unit(axis)})
    assert [i.label for i in q.interests()] == [i.label for i in p.interests()]


def test_pickled_state_keeps_centroids_ids_and_the_dedup_ring() -> None:
    """The compact pickle (4-bit centroids, hashed rings, zlib) restores what matters."""
    rng = np.random.default_rng(1)
    p = InterestProfile(max_interests=8)
    for n in range(300):
        e = rng.normal(size=384).astype(np.float32)
        p.learn(
            {
                "event_id": f"e{n}",
                "embedding": e / np.linalg.norm(e),
                "ts": n,
                "item_id": f"item-{n % 50}",
            }
        )
    q = pickle.loads(pickle.dumps(p))
    assert p._centroids is not None and q._centroids is not None
    cos = (p._centroids * q._centroids).sum(axis=1) / (
        np.linalg.norm(p._centroids, axis=1) * np.linalg.norm(q._centroids, axis=1)
    )
    assert cos.min() >= 0.98  # 4-bit codes; MiniLM centroids: mean 0.992
    r = pickle.loads(pickle.dumps(q))
    assert r._centroids is not None and np.array_equal(r._centroids, q._centroids), (
        "re-pickling a recovered profile must add no further error"
    )
    assert q.consumed_hashes() == p.consumed_hashes() and len(q.consumed_hashes()) == 50
    assert q.has_consumed("item-7") and not q.has_consumed("item-50")
    assert [i.label for i in q.interests()] == [i.label for i in p.interests()]
    assert [round(i.weight, 3) for i in q.interests()] == [
        round(i.weight, 3) for i in p.interests()
    ]
    assert q.learn({"event_id": "e299", "ts": 300}) is False  # still a duplicate after the trip
    assert q.learn({"event_id": "e300", "ts": 300}) is True
    assert pickle.loads(pickle.dumps(q)).events == p.events + 1


def test_clone_shares_no_state() -> None:
    p = trained()
    c = p.clone()
    assert c.n_interests == 0 and p.n_interests == 3
    c.learn_one(obs(999, 5))
    assert p.n_interests == 3


def test_weights_decay_with_event_time() -> None:
    p = InterestProfile(half_life_days=1.0)
    p.learn_one(obs(1, 0, ts=0))
    w0 = p.interests(0)[0].weight
    assert p.interests(DAY)[0].weight == pytest.approx(w0 / 2)


def test_recent_interest_outweighs_old_one() -> None:
    p = InterestProfile(half_life_days=7.0)
    for i in range(10):
        p.learn_one(obs(i, 0, ts=i))  # ten old events
    for i in range(10, 14):
        p.learn_one(obs(i, 1, ts=60 * DAY + i))  # four recent ones
    assert p.interests()[0].label == "cat1"


def test_late_event_does_not_rewind_the_clock() -> None:
    p = InterestProfile(half_life_days=1.0)
    p.learn_one(obs(1, 0, ts=10 * DAY))
    p.learn_one(obs(2, 0, ts=9 * DAY))  # a day late: counts half
    assert p.updated_at == 10 * DAY
    assert p.interests()[0].weight == pytest.approx(1.5)


def test_dislike_weakens_and_can_remove_an_interest() -> None:
    p = InterestProfile()
    p.learn_one(obs(1, 0, w=1.0))
    p.learn_one(obs(2, 0, w=-5.0))
    assert p.n_interests == 0


def test_exemplar_and_platforms_are_kept() -> None:
    p = InterestProfile()
    p.learn_one(obs(1, 0, platform="shop"))
    p.learn_one(obs(2, 0, platform="video"))
    (interest,) = p.interests()
    assert interest.exemplar_id in {"item-0-1", "item-0-2"}
    assert set(interest.platforms) == {"shop", "video"}


def test_merge_combines_two_people_and_stays_bounded() -> None:
    a, b = InterestProfile(max_interests=3), InterestProfile(max_interests=3)
    for i in range(30):
        a.learn_one(obs(i, i % 3))
        b.learn_one(obs(100 + i, 3 + i % 3))
    assert a.merge(b, source="p_b")
    assert a.n_interests == 3
    assert a.events == 60
    before = pickle.dumps(a)
    assert not a.merge(b, source="p_b"), "a replayed merge is a no-op"
    assert pickle.dumps(a) == before
    assert a.seen("e105") and a.seen("e5")
    assert a.has_consumed("item-3-100") and a.has_consumed("item-0-0")


def test_to_json_matches_counters() -> None:
    p = trained()
    snap = p.to_json("p_" + "0" * 20, ["shop:u1"])
    assert snap["events"] == 60
    assert len(snap["interests"]) == 3
    assert snap["platforms"]["shop"] > 0


def _busy_profile(events: int, *, title_chars: int = 30, term_chars: int = 8) -> InterestProfile:
    """One person's profile after ``events`` varied events (platforms, types, many terms)."""
    rng = np.random.default_rng(7)
    topics = rng.normal(size=(20, 384))
    p = InterestProfile()
    for n in range(events):
        e = topics[n % 20] + 0.7 * rng.normal(size=384)
        p.learn(
            {
                "event_id": f"event-{n:08d}",
                "embedding": (e / np.linalg.norm(e)).astype(np.float32),
                "weight": 1.0,
                "ts": 1_700_000_000_000 + n * 60_000,
                "platform": ("shop", "news", "video", "social", "courses")[n % 5],
                "type": ("view", "click", "like", "cart", "purchase", "share")[n % 6],
                "item_id": f"item-{n:07d}",
                "title": (f"t{n:07d} " * 40)[:title_chars],
                "terms": [f"k{n % 37}".ljust(term_chars, "x"), f"c{n % 11}"],
            }
        )
    return p


@pytest.mark.parametrize("events", [10, 100, 1000, 3000])
def test_pickled_state_stays_within_4_kib_whatever_the_history(events: int) -> None:
    from stream.profile import STATE_BUDGET_BYTES

    p = _busy_profile(events)
    assert len(pickle.dumps(p)) <= STATE_BUDGET_BYTES == 4096
    q = pickle.loads(pickle.dumps(p))
    assert q.events == events and q.n_interests == p.n_interests
    assert q.seen(f"event-{events - 1:08d}") and q.has_consumed(f"item-{events - 1:07d}")


def test_over_budget_state_trims_labels_not_the_model() -> None:
    """Very long titles and terms: annotations are trimmed to fit, the model is kept whole."""
    p = _busy_profile(1000, title_chars=200, term_chars=60)
    q = pickle.loads(pickle.dumps(p))
    assert len(pickle.dumps(p)) <= 4096
    assert q.n_interests == p.n_interests == 8
    assert q.consumed_hashes() == p.consumed_hashes() and q._recent == p._recent
    assert all(len(i.terms) <= 3 for i in q.interests())


def test_version_2_pickles_still_load() -> None:
    """Profiles pickled before the 4 KiB format (int8 centroids, 64-bit event hashes, item ids
    joined by \\x1f) restore with their dedup ring and consumed items intact."""
    import hashlib

    p = trained()
    state = dict(p.__dict__)
    assert p._centroids is not None
    scale = np.abs(p._centroids).max(axis=1) / 127.0
    codes = np.rint(p._centroids / scale[:, None]).astype(np.int8)
    state["_centroids"] = (codes.tobytes(), scale.astype("<f4").tobytes(), DIM)
    old_hashes = [
        int.from_bytes(hashlib.blake2b(f"e{n}".encode(), digest_size=8).digest(), "little")
        for n in range(60)
    ]
    state["_recent"] = np.asarray(old_hashes, dtype="<u8").tobytes()
    state["_consumed"] = "\x1f".join(f"item-{n % 3}-{n}" for n in range(60))
    state["_merged"] = ["p_old"]
    q = InterestProfile.__new__(InterestProfile)
    q.__setstate__(state)
    assert q.seen("e59") and not q.seen("e60")
    assert q.has_consumed("item-2-59")
    assert not q.merge(InterestProfile(), source="p_old"), "its merges are still remembered"
    assert [i.label for i in q.interests()] == [i.label for i in p.interests()]
