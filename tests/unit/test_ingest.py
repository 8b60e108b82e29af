"""Validation and cleaning: every reject names a stable reason, clean events come out normalised."""

from __future__ import annotations

import json

import pytest

from stream.ingest import REASONS, Rejection, clean_text, parse_event, parse_timestamp
from stream.models import Event


def ev(**kw: object) -> bytes:
    base: dict[str, object] = {
        "event_id": "e1",
        "platform": "shop",
        "user_id": "u1",
        "type": "view",
        "ts": 1_700_000_000_000,
        "item": {"id": "sku-1", "title": "Shoes"},
    }
    base.update(kw)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def test_valid_event_is_cleaned() -> None:
    raw = ev(
        item={"id": "sku-1", "title": "  <b>Trail</b>   shoes &amp; socks ", "tags": ["run", " "]}
    )
    out = parse_event(raw)
    assert isinstance(out, Event)
    assert out.item is not None
    assert out.item.title == "Trail shoes & socks"
    assert out.item.tags == ("run",)


def test_rfc3339_and_epoch_ms_agree() -> None:
    assert parse_timestamp("2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert parse_timestamp("2023-11-14T23:13:20+01:00") == 1_700_000_000_000
    assert parse_timestamp(1_700_000_000_000) == 1_700_000_000_000
    with pytest.raises(ValueError):
        parse_timestamp("2023-11-14T22:13:20")  # no offset: ambiguous


def test_long_text_is_truncated_not_rejected() -> None:
    out = parse_event(ev(type="search", item=..., text="word " * 5000), max_chars=100)
    assert isinstance(out, Event)
    assert 80 <= len(out.text) <= 100


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe not utf8", "invalid_encoding"),
        (b'{"event_id": "e1", "platform"', "invalid_json"),
        (b"[1, 2, 3]", "not_an_object"),
        (ev(user_id=...), "missing_field"),
        (ev(event_id=""), "missing_field"),
        (ev(platform="Shop Floor"), "invalid_field"),
        (ev(type="teleport"), "unknown_type"),
        (ev(ts="yesterday"), "invalid_timestamp"),
        (ev(ts=-5), "invalid_timestamp"),
        (ev(type="purchase", item=...), "missing_item"),
        (ev(type="search", item=..., text="   "), "missing_text"),
        (ev(type="link", item=...), "missing_link"),
        (ev(type="identify", item=...), "missing_identifiers"),
        (ev(email="a@b.example"), "raw_identifier"),
        (ev(identifiers={"email_sha256": "a@b.example"}), "raw_identifier"),
        (ev(rating=11), "invalid_field"),
        (ev(item={"id": "x", "price": -1}), "invalid_field"),
        (b"{" + b" " * 1_000_001 + b"}", "payload_too_large"),
    ],
)
def test_rejections_name_their_reason(raw: bytes, reason: str) -> None:
    out = parse_event(raw)
    assert isinstance(out, Rejection), out
    assert out.reason == reason
    assert out.reason in REASONS
    assert out.detail


def test_clean_text_strips_markup_and_whitespace() -> None:
    assert clean_text("<p>a</p>\n\t b", 10) == "a b"


def test_identifier_digest_is_lowercased() -> None:
    digest = "A" * 64
    out = parse_event(ev(type="identify", item=..., identifiers={"email_sha256": digest}))
    assert isinstance(out, Event)
    assert out.identifiers == {"email_sha256": "a" * 64}


def test_event_json_round_trip() -> None:
    out = parse_event(ev(type="rate", rating=4, identifiers={"device_id": "d1"}))
    assert isinstance(out, Event)
    assert Event.from_json(json.loads(json.dumps(out.to_json()))) == out
