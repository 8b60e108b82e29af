"""Typed records that mirror ``schemas/*.schema.json`` (a test proves they agree).

Plain frozen dataclasses: cheap to build, picklable, and free of Faust so the pure logic can use
them without a broker. ``to_json``/``from_json`` are the wire format of internal topics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

EventType = Literal[
    "view",
    "click",
    "like",
    "dislike",
    "share",
    "comment",
    "review",
    "rate",
    "purchase",
    "cart",
    "search",
    "post",
    "follow",
    "identify",
    "link",
    "erase",
]
EVENT_TYPES: frozenset[str] = frozenset(EventType.__args__)  # type: ignore[attr-defined]
ITEM_TYPES: frozenset[str] = frozenset(
    {"view", "click", "like", "dislike", "share", "comment", "review", "rate", "purchase", "cart"}
)
TEXT_TYPES: frozenset[str] = frozenset({"search", "post"})
IDENTIFIER_KINDS: tuple[str, ...] = ("email_sha256", "phone_sha256", "device_id")


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    title: str = ""
    text: str = ""
    category: str = ""
    tags: tuple[str, ...] = ()
    price: float | None = None
    platforms: tuple[str, ...] = ()

    def embed_text(self) -> str:
        """The text the encoder sees for this item: title, category, tags, then the body."""
        parts = [self.title]
        if self.category:
            parts.append(self.category)
        if self.tags:
            parts.append(", ".join(self.tags))
        if self.text:
            parts.append(self.text)
        return ". ".join(p for p in parts if p) or self.id

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["tags"] = list(self.tags)
        d["platforms"] = list(self.platforms)
        if self.price is None:
            del d["price"]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Item:
        return cls(
            id=str(d["id"]),
            title=d.get("title", "") or "",
            text=d.get("text", "") or "",
            category=d.get("category", "") or "",
            tags=tuple(d.get("tags", ()) or ()),
            price=d.get("price"),
            platforms=tuple(d.get("platforms", ()) or ()),
        )


@dataclass(frozen=True, slots=True)
class Event:
    """A validated, cleaned canonical event. ``ts`` is epoch milliseconds."""

    event_id: str
    platform: str
    user_id: str
    type: str
    ts: int
    item: Item | None = None
    text: str = ""
    rating: float | None = None
    identifiers: dict[str, str] = field(default_factory=dict)
    link: tuple[str, str] | None = None

    @property
    def account(self) -> str:
        return account_key(self.platform, self.user_id)

    def embed_text(self) -> str | None:
        """What to embed for this event, or None when it carries no text."""
        if self.item is not None:
            return self.item.embed_text()
        return self.text or None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "event_id": self.event_id,
            "platform": self.platform,
            "user_id": self.user_id,
            "type": self.type,
            "ts": self.ts,
        }
        if self.item is not None:
            d["item"] = self.item.to_json()
            d["item"].pop("platforms", None)
        if self.text:
            d["text"] = self.text
        if self.rating is not None:
            d["rating"] = self.rating
        if self.identifiers:
            d["identifiers"] = dict(self.identifiers)
        if self.link is not None:
            d["link"] = {"platform": self.link[0], "user_id": self.link[1]}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Event:
        link = d.get("link")
        return cls(
            event_id=d["event_id"],
            platform=d["platform"],
            user_id=d["user_id"],
            type=d["type"],
            ts=int(d["ts"]),
            item=Item.from_json(d["item"]) if d.get("item") else None,
            text=d.get("text", ""),
            rating=d.get("rating"),
            identifiers=dict(d.get("identifiers") or {}),
            link=(link["platform"], link["user_id"]) if link else None,
        )


def account_key(platform: str, user_id: str) -> str:
    """The identity of one account: ``platform:user_id``."""
    return f"{platform}:{user_id}"


__all__ = [
    "EVENT_TYPES",
    "IDENTIFIER_KINDS",
    "ITEM_TYPES",
    "TEXT_TYPES",
    "Event",
    "EventType",
    "Item",
    "account_key",
]
