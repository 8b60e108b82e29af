"""The item index and multi-interest scoring: candidates per interest, diversified, with reasons.

Pure numpy; no Faust. For each of a person's interests (heaviest first) the index returns the
items nearest to its centroid; items the person already consumed, or not offered on the target
platform, are dropped; slots are shared out across interests in proportion to their weight
(at least one each for the top interests), so one dominant taste cannot crowd out the rest.
Each recommended item names the interest it came from, that interest's label and exemplar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .models import Item
from .profile import Interest, InterestProfile


@dataclass(frozen=True, slots=True)
class Scored:
    item_id: str
    title: str
    score: float
    interest: int
    label: str
    exemplar: str | None
    platforms: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "title": self.title,
            "score": round(self.score, 5),
            "reason": {
                "interest": self.interest,
                "label": self.label,
                "exemplar": self.exemplar,
                "platforms": list(self.platforms),
            },
        }


class ItemIndex:
    """Exact inner-product index over L2-normalised item embeddings, grown in place."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._items: list[Item] = []
        self._row: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row

    def get(self, item_id: str) -> Item | None:
        row = self._row.get(item_id)
        return None if row is None else self._items[row]

    def vector(self, item_id: str) -> np.ndarray | None:
        row = self._row.get(item_id)
        return None if row is None else self._vectors[row]

    def upsert(self, item: Item, vector: np.ndarray) -> None:
        row = self._row.get(item.id)
        if row is None:
            row = len(self._items)
            if row == self._vectors.shape[0]:
                grown = np.zeros((row * 2, self.dim), dtype=np.float32)
                grown[:row] = self._vectors
                self._vectors = grown
            self._items.append(item)
            self._row[item.id] = row
        else:
            old = self._items[row]
            if old.platforms and item.platforms:  # platforms accumulate; empty means "everywhere"
                merged = tuple(dict.fromkeys(old.platforms + item.platforms))
                item = Item(
                    item.id, item.title, item.text, item.category, item.tags, item.price, merged
                )
            self._items[row] = item
        self._vectors[row] = vector

    def recommend(
        self,
        profile: InterestProfile,
        k: int = 10,
        *,
        platform: str | None = None,
        now: int | None = None,
        max_interests: int = 8,
    ) -> list[Scored]:
        n = len(self._items)
        interests = [i for i in profile.interests(now)[:max_interests] if i.weight > 0]
        if n == 0 or not interests:
            return []
        exclude = profile.consumed
        allowed = None
        if platform is not None:
            allowed = np.fromiter(
                (not it.platforms or platform in it.platforms for it in self._items), bool, n
            )
        centroids = np.stack([i.centroid for i in interests])
        sims = centroids @ self._vectors[:n].T  # (m, n)
        if allowed is not None:
            sims[:, ~allowed] = -np.inf
        for item_id in exclude:
            row = self._row.get(item_id)
            if row is not None:
                sims[:, row] = -np.inf
        quotas = _quotas([i.weight for i in interests], k)
        total = sum(i.weight for i in interests)
        pool = min(n, k * 3)
        ranked: list[list[int]] = []
        for m in range(len(interests)):
            top = np.argpartition(-sims[m], pool - 1)[:pool] if pool < n else np.arange(n)
            ranked.append(
                [int(r) for r in top[np.argsort(-sims[m, top])] if np.isfinite(sims[m, r])]
            )
        out: list[Scored] = []
        taken: set[int] = set()
        cursor = [0] * len(interests)
        # round-robin over interests by quota, then fill from the best remaining
        for rnd in range(k):
            for m, interest in enumerate(interests):
                if len(out) >= k:
                    break
                if rnd >= quotas[m]:
                    continue
                self._take(m, interest, ranked, cursor, taken, sims, total, out)
        m = 0
        while len(out) < k and any(c < len(r) for c, r in zip(cursor, ranked, strict=True)):
            self._take(m, interests[m], ranked, cursor, taken, sims, total, out)
            m = (m + 1) % len(interests)
        return out

    def _take(
        self,
        m: int,
        interest: Interest,
        ranked: list[list[int]],
        cursor: list[int],
        taken: set[int],
        sims: np.ndarray,
        total: float,
        out: list[Scored],
    ) -> None:
        lst = ranked[m]
        while cursor[m] < len(lst) and lst[cursor[m]] in taken:
            cursor[m] += 1
        if cursor[m] >= len(lst):
            return
        row = lst[cursor[m]]
        cursor[m] += 1
        taken.add(row)
        item = self._items[row]
        share = interest.weight / total if total > 0 else 0.0
        out.append(
            Scored(
                item_id=item.id,
                title=item.title or item.id,
                score=float(sims[m, row]) * (0.5 + 0.5 * share),
                interest=interest.index,
                label=interest.label,
                exemplar=interest.exemplar_title or interest.exemplar_id,
                platforms=tuple(sorted(interest.platforms)),
            )
        )


def _quotas(weights: list[float], k: int) -> list[int]:
    """Share ``k`` slots in proportion to weight, at least one per interest while slots last.

    >>> _quotas([6.0, 3.0, 1.0], 10)
    [6, 3, 1]
    """
    total = sum(weights) or 1.0
    quotas = [max(1, round(k * w / total)) for w in weights]
    while sum(quotas) > k:
        quotas[quotas.index(max(quotas))] -= 1
    return quotas


__all__ = ["ItemIndex", "Scored"]
