"""Synthetic event streams for ``crossprofile bench pipeline`` (pure: no broker, no worker).

* :class:`ZipfSampler` — catalogue ranks by Zipf(s) popularity, deterministic per seed.
* :func:`distinct_texts` — distinct corpus texts (:mod:`stream.bench.texts`).
* :class:`EventStream` — an endless stream of :class:`SyntheticEvent` over many accounts, its
  items from :func:`unique_items` (every event a new item) or :func:`zipf_items` (a fixed
  catalogue drawn by popularity).
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from stream.bench.texts import DEFAULT_SEED, generate

PLATFORMS: Final = ("shop", "news", "video", "social")
CATEGORIES: Final = (
    "running", "electronics", "kitchen", "books", "fashion", "music", "outdoor", "home",
    "toys", "beauty", "garden", "travel",
)  # fmt: skip
EVENT_TYPES: Final = ("view", "click", "like", "cart", "purchase", "share")
TYPE_WEIGHTS: Final = (0.5, 0.2, 0.12, 0.08, 0.05, 0.05)
TS_BASE_MS: Final = 1_763_600_000_000


class ZipfSampler:
    """Ranks ``0..n-1`` drawn with probability ∝ ``(rank + 1) ** -s``; deterministic per seed.

    >>> a = ZipfSampler(1000, 1.1, seed=3).sample(5)
    >>> b = ZipfSampler(1000, 1.1, seed=3).sample(5)
    >>> bool((a == b).all()), int(a.min()) >= 0, int(a.max()) < 1000
    (True, True, True)
    """

    def __init__(self, n: int, s: float, *, seed: int) -> None:
        if n < 1:
            raise ValueError("n must be at least 1.")
        if s <= 0:
            raise ValueError("s must be greater than 0.")
        self.n = n
        self.s = s
        weights = np.arange(1, n + 1, dtype=np.float64) ** -s
        self.probabilities: npt.NDArray[np.float64] = weights / weights.sum()
        self._cdf = np.cumsum(self.probabilities)
        self._cdf[-1] = 1.0
        self._rng = np.random.default_rng(seed)

    def sample(self, size: int) -> npt.NDArray[np.int64]:
        """``size`` ranks (0 is the most popular)."""
        u = self._rng.random(size)
        return np.searchsorted(self._cdf, u, side="right").astype(np.int64)

    def expected_distinct(self, draws: int) -> float:
        """Expected number of distinct ranks among ``draws`` draws."""
        return float(np.sum(1.0 - (1.0 - self.probabilities) ** draws))


def distinct_texts(n: int, *, seed: int = DEFAULT_SEED) -> list[str]:
    """``n`` distinct corpus texts (:mod:`stream.bench.texts`), chaining seeds beyond one's supply.

    >>> t = distinct_texts(50)
    >>> len(set(t)), t == distinct_texts(50)
    (50, True)
    """
    out: list[str] = []
    seen: set[str] = set()
    for k in itertools.count():
        if len(out) >= n:
            break
        for _kind, text in generate(min(30_000, n - len(out)), seed=seed + k):
            if text not in seen:
                seen.add(text)
                out.append(text)
    return out[:n]


@dataclass(frozen=True)
class SyntheticEvent:
    """One event to produce: its Kafka key, JSON bytes and id."""

    key: bytes
    value: bytes
    event_id: str
    embed_text: str


def make_event(
    event_id: str, n: int, platform_: str, user: str, etype: str, item: Mapping[str, Any]
) -> SyntheticEvent:
    """A canonical event keyed by account, as platform producers send them."""
    body = {
        "event_id": event_id,
        "platform": platform_,
        "user_id": user,
        "type": etype,
        "ts": TS_BASE_MS + n * 10,
        "item": dict(item),
    }
    embed = ". ".join(p for p in (str(item["title"]), str(item.get("category", ""))) if p)
    return SyntheticEvent(
        f"{platform_}:{user}".encode(), json.dumps(body).encode(), event_id, embed
    )


class EventStream:
    """An endless stream of item events over ``users`` accounts: accounts, types and items are
    deterministic per seed; event ids carry a per-run tag, so a rerun on a shared broker never
    looks like a replay.

    ``items(i)`` gives the item of event ``i`` (a new one per event for the unique stream, a
    Zipf-drawn catalogue entry for the zipf stream).
    """

    def __init__(
        self, name: str, items: Callable[[int], Mapping[str, Any]], *, users: int, seed: int
    ) -> None:
        self.name = name
        self._items = items
        self._users = users
        self._rng = np.random.default_rng(seed)
        self._n = 0
        self._tag = uuid.uuid4().hex[:8]

    def __iter__(self) -> Iterator[SyntheticEvent]:
        return self

    def __next__(self) -> SyntheticEvent:
        i = self._n
        self._n += 1
        u = int(self._rng.integers(self._users))
        platform_ = PLATFORMS[u % len(PLATFORMS)]
        etype = EVENT_TYPES[int(self._rng.choice(len(EVENT_TYPES), p=TYPE_WEIGHTS))]
        return make_event(
            f"{self.name}-{self._tag}-{i}", i, platform_, f"u{u}", etype, self._items(i)
        )


def unique_items(texts: Sequence[str], prefix: str = "new") -> Callable[[int], dict[str, Any]]:
    """Event ``i`` gets a never-seen item: id ``{prefix}-{i}``, title ``texts[i]`` (past the
    end of ``texts``, the text again with a ``(#round)`` suffix, still distinct).

    >>> f = unique_items(["a", "b"])
    >>> f(0)["title"], f(3)["title"], f(3)["id"]
    ('a', 'b (#1)', 'new-3')
    """

    def item(i: int) -> dict[str, Any]:
        rounds, j = divmod(i, len(texts))
        return {
            "id": f"{prefix}-{i}",
            "title": texts[j] + (f" (#{rounds})" if rounds else ""),
            "category": CATEGORIES[i % len(CATEGORIES)],
        }

    return item


def zipf_items(
    titles: Sequence[str], sampler: ZipfSampler, chunk: int = 4096
) -> Callable[[int], dict[str, Any]]:
    """Event ``i`` gets catalogue item ``z-{rank}`` (stable id, title, category) by Zipf rank."""
    ranks: list[int] = []

    def item(i: int) -> dict[str, Any]:
        while i >= len(ranks):
            ranks.extend(int(r) for r in sampler.sample(chunk))
        r = ranks[i]
        return {"id": f"z-{r}", "title": titles[r], "category": CATEGORIES[r % len(CATEGORIES)]}

    return item


__all__ = [
    "CATEGORIES",
    "EVENT_TYPES",
    "PLATFORMS",
    "TS_BASE_MS",
    "TYPE_WEIGHTS",
    "EventStream",
    "SyntheticEvent",
    "ZipfSampler",
    "distinct_texts",
    "make_event",
    "unique_items",
    "zipf_items",
]
