"""Turning clean events into profile observations and recommendation messages — no Faust here.

The Faust agents in :mod:`stream.app` are thin wiring around these functions and the classes of
:mod:`stream.profile`, :mod:`stream.identity` and :mod:`stream.recommend`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .models import Event, Item
from .profile import InterestProfile
from .recommend import ItemIndex, Scored, Signals, recommend_blended, recommend_blended_many
from .settings import Settings

_SPLIT = re.compile(r"\s*[|,;/]\s*")

#: a recommendation to publish: (person id, the event that triggered it, the profile, accounts)
Due = tuple[str, Event, InterestProfile, list[str]]


def text_key(event: Event) -> str | None:
    """Cache key for the text an event carries: item id + text hash, or the text hash alone."""
    text = event.embed_text()
    if text is None:
        return None
    digest = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
    return f"i:{event.item.id}:{digest}" if event.item is not None else f"t:{digest}"


def item_key(item: Item) -> str:
    digest = hashlib.blake2b(item.embed_text().encode(), digest_size=8).hexdigest()
    return f"i:{item.id}:{digest}"


def embedding_field(vector: np.ndarray, fingerprint: str) -> dict[str, str]:
    """The ``embedding`` of an item record a worker publishes on the items topic: the item
    text's vector (little-endian float32, base64: 2 KB at 384 dims) and the
    :attr:`~stream.encoder.Encoder.fingerprint` of the encoder that made it, so the group's
    other workers index the item without encoding its text again.

    >>> f = embedding_field(np.array([0.5, -1.0], dtype=np.float32), "fp32:2:128:ab")
    >>> f
    {'encoder': 'fp32:2:128:ab', 'f32': 'AAAAPwAAgL8='}
    >>> embedding_from_field(f, "fp32:2:128:ab", 2).tolist()
    [0.5, -1.0]
    >>> embedding_from_field(f, "int8:2:128:cd", 2) is None  # another encoder's: encode again
    True
    """
    raw = np.asarray(vector, dtype="<f4").reshape(-1).tobytes()
    return {"encoder": fingerprint, "f32": base64.b64encode(raw).decode("ascii")}


def embedding_from_field(field: Any, fingerprint: str, dim: int) -> np.ndarray | None:
    """The vector of an item record's ``embedding`` (:func:`embedding_field`), or None when the
    record has none, another encoder made it, or it is malformed (then the text is encoded)."""
    if not isinstance(field, Mapping) or field.get("encoder") != fingerprint:
        return None
    data = field.get("f32")
    if not isinstance(data, str):
        return None
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 4 * dim:
        return None
    vec = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    return vec if bool(np.isfinite(vec).all()) else None


def signal_weight(event: Event, weights: Mapping[str, float]) -> float:
    """Signed strength of an event; ratings scale ``rate``/``review`` around the middle.

    >>> signal_weight(Event("e", "video", "u", "rate", 0, rating=5.0), {"rate": 2.0})
    2.0
    >>> signal_weight(Event("e", "video", "u", "rate", 0, rating=1.0), {"rate": 2.0})
    -1.2
    """
    base = float(weights.get(event.type, 0.0))
    if event.rating is not None and event.type in ("rate", "review"):
        scale = 5.0 if event.rating <= 5 else 10.0
        return round(base * (2.0 * event.rating / scale - 1.0), 6)
    return base


def item_terms(item: Item | None) -> list[str]:
    if item is None:
        return []
    terms = [t for t in _SPLIT.split(item.category) if t] if item.category else []
    return terms + [t for t in item.tags if t not in terms]


def observation(event: Event, embedding: np.ndarray | None, settings: Settings) -> dict[str, Any]:
    """The ``learn_one`` input for an event."""
    item = event.item
    return {
        "event_id": event.event_id,
        "embedding": embedding,
        "weight": signal_weight(event, settings.signal_weights),
        "ts": event.ts,
        "platform": event.platform,
        "type": event.type,
        "item_id": item.id if item is not None else None,
        "title": (item.title or item.id) if item is not None else None,
        "terms": item_terms(item),
    }


def new_profile(settings: Settings) -> InterestProfile:
    return InterestProfile(
        max_interests=settings.max_interests, half_life_days=settings.half_life_days
    )


def recommendation_message(
    person_id: str,
    event: Event,
    profile: InterestProfile,
    index: ItemIndex,
    settings: Settings,
    accounts: list[str],
    now_ms: int,
    *,
    signals: Signals | None = None,
) -> dict[str, Any] | None:
    """The ``schemas/recommendation.schema.json`` message, or None when nothing can be offered.

    With ``signals`` (as the worker runs) the ranking is :func:`~stream.recommend.recommend_blended`
    — interests, co-visits and popularity; without, the interests' cosine alone."""
    if signals is not None:
        scored = recommend_blended(
            index,
            profile,
            signals,
            settings.top_k,
            now=profile.updated_at,
            platform=event.platform,
        )
    else:
        scored = index.recommend(
            profile, settings.top_k, platform=event.platform, now=profile.updated_at
        )
    return _message(person_id, event, accounts, scored, now_ms)


def recommendation_messages(
    requests: Sequence[Due],
    index: ItemIndex,
    settings: Settings,
    now_ms: int,
    *,
    signals: Signals,
) -> list[dict[str, Any] | None]:
    """:func:`recommendation_message` (with ``signals``) for several ``(person_id, event,
    profile, accounts)`` at once: the same messages, the item vectors read once for all of them
    (:func:`~stream.recommend.recommend_blended_many`)."""
    scored = recommend_blended_many(
        index,
        [(prof, ev.platform, prof.updated_at) for _pid, ev, prof, _acc in requests],
        signals,
        settings.top_k,
    )
    return [
        _message(pid, ev, accounts, s, now_ms)
        for (pid, ev, _prof, accounts), s in zip(requests, scored, strict=True)
    ]


def _message(
    person_id: str, event: Event, accounts: list[str], scored: list[Scored], now_ms: int
) -> dict[str, Any] | None:
    if not scored:
        return None
    return {
        "person_id": person_id,
        "platform": event.platform,
        "generated_at": now_ms,
        "trigger": {
            "event_id": event.event_id,
            "platform": event.platform,
            "user_id": event.user_id,
            "type": event.type,
        },
        "accounts": accounts,
        "items": [s.to_json() for s in scored],
    }


__all__ = [
    "Due",
    "item_key",
    "item_terms",
    "new_profile",
    "observation",
    "recommendation_message",
    "recommendation_messages",
    "signal_weight",
    "text_key",
]
