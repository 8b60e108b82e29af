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
    """The compact pickle (int8 centroids, packed ring, joined ids) restores what matters."""
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
    assert cos.min() >= 0.9999
    assert q.consumed == p.consumed and q.recent_items() == p.recent_items()
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
    assert len(a.consumed) > 0


def test_to_json_matches_counters() -> None:
    p = trained()
    snap = p.to_json("p_" + "0" * 20, ["shop:u1"])
    assert snap["events"] == 60
    assert len(snap["interests"]) == 3
    assert snap["platforms"]["shop"] > 0
