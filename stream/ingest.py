"""Validate and clean raw event bytes into :class:`~stream.models.Event` — or say exactly why not.

Pure and synchronous. Every rejection carries a stable, machine-readable ``reason`` (the enum in
``schemas/dlq.schema.json``) and a human ``detail``:

>>> r = parse_event(b'{"event_id": "e", "platform": "a", "user_id": "u", "type": "fly", "ts": 1}')
>>> r.reason, r.detail[:30]
('unknown_type', "type 'fly' is not one of: cart")

Cleaning: markup is stripped, entities unescaped, whitespace collapsed, and long text truncated
(never rejected for length).
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from .models import EVENT_TYPES, IDENTIFIER_KINDS, ITEM_TYPES, TEXT_TYPES, Event, Item

Reason = Literal[
    "invalid_encoding",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "invalid_field",
    "unknown_type",
    "invalid_timestamp",
    "missing_item",
    "missing_text",
    "missing_link",
    "missing_identifiers",
    "raw_identifier",
    "payload_too_large",
]
REASONS: Final[tuple[str, ...]] = Reason.__args__  # type: ignore[attr-defined]

MAX_PAYLOAD_BYTES: Final = 1_000_000
_TAG = re.compile(r"<[^>]{0,2000}>")
_SPACE = re.compile(r"\s+")
_PLATFORM = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RAW_FIELDS: Final = ("email", "phone", "email_address", "phone_number")
_TYPES_LIST: Final = ", ".join(sorted(EVENT_TYPES))


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str

    def __repr__(self) -> str:
        detail = self.detail if len(self.detail) < 60 else self.detail[:45] + " ..."
        return f"Rejection(reason={self.reason!r}, detail={detail!r})"


class _Reject(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def clean_text(value: str, max_chars: int) -> str:
    """Strip markup, unescape entities, collapse whitespace, truncate to ``max_chars``.

    >>> clean_text("  <p>Great&nbsp;<b>shoes</b></p>\\n\\n fit well ", 100)
    'Great shoes fit well'
    """
    text = html.unescape(_TAG.sub(" ", value)) if ("<" in value or "&" in value) else value
    text = _SPACE.sub(" ", text).strip()
    if len(text) > max_chars:
        cut = text[:max_chars]
        space = cut.rfind(" ")
        text = cut[:space] if space > max_chars * 0.8 else cut
    return text


def parse_timestamp(value: Any) -> int:
    """RFC 3339 string or epoch milliseconds → epoch milliseconds."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("epoch milliseconds must be >= 0")
        return value
    if isinstance(value, float) and math.isfinite(value) and value >= 0 and value.is_integer():
        return int(value)
    if isinstance(value, str) and len(value) >= 10:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        if dt.tzinfo is None:
            raise ValueError("an RFC 3339 timestamp needs a time-zone offset (e.g. 'Z')")
        return int(dt.timestamp() * 1000)
    raise ValueError("expected an RFC 3339 string or epoch milliseconds")


def _string(d: dict[str, Any], key: str, *, required: bool, max_len: int = 200) -> str:
    value = d.get(key)
    if value is None:
        if required:
            raise _Reject("missing_field", f"'{key}' is required")
        return ""
    if not isinstance(value, str):
        raise _Reject("invalid_field", f"'{key}' must be a string, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise _Reject("missing_field", f"'{key}' must not be empty")
    if len(value) > max_len:
        raise _Reject("invalid_field", f"'{key}' is longer than {max_len} characters")
    return value


def _item(raw: Any, max_chars: int) -> Item:
    if not isinstance(raw, dict):
        raise _Reject("invalid_field", "'item' must be an object")
    item_id = _string(raw, "id", required=False)
    if not item_id:
        raise _Reject("missing_field", "'item.id' is required")
    tags_raw = raw.get("tags", [])
    if not isinstance(tags_raw, list) or not all(isinstance(t, str) for t in tags_raw):
        raise _Reject("invalid_field", "'item.tags' must be a list of strings")
    price = raw.get("price")
    if price is not None and (
        isinstance(price, bool) or not isinstance(price, int | float) or not price >= 0
    ):
        raise _Reject("invalid_field", "'item.price' must be a number >= 0")
    texts = {}
    for key in ("title", "text", "category"):
        value = raw.get(key, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise _Reject("invalid_field", f"'item.{key}' must be a string")
        texts[key] = clean_text(value, max_chars if key == "text" else 300)
    tags = tuple(t for t in (clean_text(t, 64) for t in tags_raw[:64]) if t)
    return Item(
        id=item_id,
        title=texts["title"],
        text=texts["text"],
        category=texts["category"],
        tags=tags,
        price=None if price is None else float(price),
    )


def _validate(d: dict[str, Any], max_chars: int) -> Event:
    for raw_field in _RAW_FIELDS:
        if raw_field in d:
            raise _Reject(
                "raw_identifier",
                f"'{raw_field}' looks like a raw identifier; send its SHA-256 hex digest in "
                "'identifiers' (email_sha256 / phone_sha256) instead",
            )
    event_id = _string(d, "event_id", required=True)
    platform = _string(d, "platform", required=True, max_len=32)
    if not _PLATFORM.fullmatch(platform):
        raise _Reject("invalid_field", "'platform' must match [a-z0-9][a-z0-9_.-]{0,31}")
    user_id = _string(d, "user_id", required=True)
    etype = d.get("type")
    if etype is None:
        raise _Reject("missing_field", "'type' is required")
    if not isinstance(etype, str) or etype not in EVENT_TYPES:
        raise _Reject("unknown_type", f"type {etype!r} is not one of: {_TYPES_LIST}")
    if "ts" not in d:
        raise _Reject("missing_field", "'ts' is required")
    try:
        ts = parse_timestamp(d["ts"])
    except (ValueError, OverflowError) as exc:
        raise _Reject("invalid_timestamp", f"'ts' {d['ts']!r}: {exc}") from None

    item = _item(d["item"], max_chars) if d.get("item") is not None else None
    if etype in ITEM_TYPES and item is None:
        raise _Reject("missing_item", f"a '{etype}' event needs an 'item' with an 'id'")

    text_raw = d.get("text", "")
    if text_raw is None:
        text_raw = ""
    if not isinstance(text_raw, str):
        raise _Reject("invalid_field", "'text' must be a string")
    text = clean_text(text_raw, max_chars)
    if etype in TEXT_TYPES and not text:
        raise _Reject("missing_text", f"a '{etype}' event needs a non-empty 'text'")

    rating = d.get("rating")
    if rating is not None and (
        isinstance(rating, bool) or not isinstance(rating, int | float) or not 0 <= rating <= 10
    ):
        raise _Reject("invalid_field", "'rating' must be a number from 0 to 10")

    identifiers: dict[str, str] = {}
    ids_raw = d.get("identifiers")
    if ids_raw is not None:
        if not isinstance(ids_raw, dict):
            raise _Reject("invalid_field", "'identifiers' must be an object")
        for key, value in ids_raw.items():
            if key not in IDENTIFIER_KINDS:
                raise _Reject(
                    "raw_identifier" if key in _RAW_FIELDS else "invalid_field",
                    f"unknown identifier {key!r}; accepted: {', '.join(IDENTIFIER_KINDS)}",
                )
            if not isinstance(value, str) or not value:
                raise _Reject("invalid_field", f"'identifiers.{key}' must be a non-empty string")
            if key.endswith("_sha256"):
                value = value.lower()
                if not _HEX64.fullmatch(value):
                    raise _Reject(
                        "raw_identifier",
                        f"'identifiers.{key}' must be a SHA-256 hex digest, not a raw value",
                    )
            identifiers[key] = value
    if etype == "identify" and not identifiers:
        raise _Reject("missing_identifiers", "an 'identify' event needs 'identifiers'")

    link: tuple[str, str] | None = None
    link_raw = d.get("link")
    if link_raw is not None:
        if not isinstance(link_raw, dict):
            raise _Reject("invalid_field", "'link' must be an object")
        lp = _string(link_raw, "platform", required=False, max_len=32)
        lu = _string(link_raw, "user_id", required=False)
        if not lp or not lu or not _PLATFORM.fullmatch(lp):
            raise _Reject("invalid_field", "'link' needs a valid 'platform' and 'user_id'")
        link = (lp, lu)
    if etype == "link" and link is None:
        raise _Reject("missing_link", "a 'link' event needs 'link': {platform, user_id}")

    return Event(
        event_id=event_id,
        platform=platform,
        user_id=user_id,
        type=etype,
        ts=ts,
        item=item,
        text=text,
        rating=None if rating is None else float(rating),
        identifiers=identifiers,
        link=link,
    )


def parse_event(raw: bytes | str | dict[str, Any], *, max_chars: int = 2_000) -> Event | Rejection:
    """Turn one raw input into a clean :class:`Event`, or a :class:`Rejection` with its reason."""
    try:
        if isinstance(raw, dict):
            d: Any = raw
        else:
            if isinstance(raw, bytes):
                if len(raw) > MAX_PAYLOAD_BYTES:
                    raise _Reject("payload_too_large", f"{len(raw)} bytes > {MAX_PAYLOAD_BYTES}")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _Reject("invalid_encoding", f"not UTF-8: {exc}") from None
            else:
                text = raw
            try:
                d = json.loads(text)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise _Reject("invalid_json", f"not JSON: {exc}") from None
        if not isinstance(d, dict):
            raise _Reject("not_an_object", f"expected a JSON object, got {type(d).__name__}")
        return _validate(d, max_chars)
    except _Reject as rej:
        return Rejection(rej.reason, rej.detail)


__all__ = ["REASONS", "Rejection", "clean_text", "parse_event", "parse_timestamp"]
