"""Multi-interest retrieval: consumed items filtered, interests all represented, reasons given."""

from __future__ import annotations

import numpy as np

from stream.models import Item
from stream.profile import InterestProfile
from stream.recommend import ItemIndex, _quotas

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


def test_consumed_items_are_filtered() -> None:
    index, profile = build()
    recs = index.recommend(profile, 10)
    assert len(recs) == 10
    ids = {r.item_id for r in recs}
    assert not ids & profile.consumed


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
