"""The JSON Schemas in schemas/ are the authority; the Python side must agree with them."""

from __future__ import annotations

import base64
import copy
import json
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import numpy as np
import pytest

from stream.app import dlq_record
from stream.identity import IdentityGraph
from stream.ingest import REASONS, parse_event
from stream.models import Event, Item
from stream.movielens import Movie, catalogue
from stream.pipeline import (
    embedding_field,
    embedding_from_field,
    new_profile,
    observation,
    recommendation_message,
)
from stream.recommend import ItemIndex
from stream.settings import Settings

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
EXAMPLES = SCHEMAS / "examples"


@cache
def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def valid(name: str, doc: Any) -> bool:
    return validator(name).is_valid(doc)


@pytest.mark.parametrize("name", ["event", "item", "recommendation", "profile", "dlq"])
def test_schemas_are_valid_2020_12(name: str) -> None:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    assert schema["$schema"].endswith("2020-12/schema")
    validator(name)


def test_examples() -> None:
    examples = sorted(EXAMPLES.glob("*.json"))
    assert len(examples) >= 6
    for path in examples:
        doc = json.loads(path.read_text())
        kind = (
            path.name.split(".")[1] if path.name.startswith("invalid.") else path.name.split(".")[0]
        )
        expect = not path.name.startswith("invalid.")
        assert valid(kind, doc) is expect, path.name
        if kind == "event":
            assert isinstance(parse_event(path.read_bytes()), Event) is expect, path.name


def _mutations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key in list(doc):
        d = copy.deepcopy(doc)
        del d[key]
        out.append(d)
        for bad in (None, 42, "", "  ", [], {}, True, -1, "x" * 300):
            d = copy.deepcopy(doc)
            d[key] = bad
            out.append(d)
    for etype in (
        "view",
        "purchase",
        "search",
        "post",
        "link",
        "identify",
        "erase",
        "follow",
        "nope",
    ):
        out.append({**doc, "type": etype})
    for ts in ("2026-11-20T10:15:00Z", "2026-11-20T10:15:00", "2026-11-20", 1.5, 10**13, "soon"):
        out.append({**doc, "ts": ts})
    out.append({**doc, "email": "a@b.example"})
    out.append({**doc, "identifiers": {"email_sha256": "f" * 64}})
    out.append({**doc, "identifiers": {"email": "f" * 64}})
    out.append({**doc, "link": {"platform": "shop"}})
    out.append({**doc, "rating": 4.5})
    out.append({**doc, "rating": 40})
    return out


def test_ingest_agrees_with_the_event_schema() -> None:
    cases = 0
    for path in sorted(EXAMPLES.glob("event.*.json")):
        base = json.loads(path.read_text())
        for doc in _mutations(base):
            by_schema = valid("event", doc)
            by_code = isinstance(parse_event(json.dumps(doc).encode()), Event)
            assert by_schema == by_code, (doc, parse_event(json.dumps(doc).encode()))
            cases += 1
    assert cases > 200


def test_clean_events_serialise_to_valid_events() -> None:
    for path in sorted(EXAMPLES.glob("event.*.json")):
        ev = parse_event(path.read_bytes())
        assert isinstance(ev, Event)
        assert valid("event", ev.to_json())


def test_dlq_record_schema() -> None:
    msg = SimpleNamespace(topic="t.events", partition=1, offset=7)
    rec = dlq_record("invalid_json", "not JSON", msg, b"\xff{")
    assert valid("dlq", rec)
    assert base64.b64decode(rec["payload"]) == b"\xff{"
    dlq_schema = json.loads((SCHEMAS / "dlq.schema.json").read_text())
    assert tuple(dlq_schema["properties"]["reason"]["enum"]) == REASONS


def test_recommendation_and_profile_messages() -> None:
    settings = Settings()
    rng = np.random.default_rng(0)
    index = ItemIndex(8)
    for i in range(30):
        v = rng.normal(size=8).astype(np.float32)
        index.upsert(Item(f"i{i}", title=f"Item {i}"), v / np.linalg.norm(v))
    graph = IdentityGraph({})
    ev = Event("e1", "shop", "u1", "purchase", 1000, item=Item("i3", title="Item 3"))
    pid = graph.resolve(ev).person_id
    prof = new_profile(settings)
    vec = index.vector("i3")
    assert vec is not None
    prof.learn(observation(ev, vec, settings))
    msg = recommendation_message(pid, ev, prof, index, settings, graph.accounts(pid), 2000)
    assert msg is not None
    assert valid("recommendation", msg)
    assert "i3" not in {i["item_id"] for i in msg["items"]}
    assert valid("profile", prof.to_json(pid, graph.accounts(pid)))


def test_catalogue_items_are_valid() -> None:
    for item in catalogue({"T": Movie("ml-1", "Toy Story (1995)", ("Animation", "Comedy"))}):
        assert valid("item", item)
        assert Item.from_json(item).category == "Animation|Comedy"


def test_a_published_item_with_its_vector_is_a_valid_item_record() -> None:
    """What a worker publishes for an item it learned: the item, its platform and the vector
    its encoder made; a worker with the same encoder reads the vector back exactly."""
    vec = np.random.default_rng(3).normal(size=384).astype(np.float32)
    item = Item("i9", title="Trail shoes", category="running", tags=("trail",), price=89.0)
    record = {
        **item.to_json(),
        "platforms": ["shop"],
        "embedding": embedding_field(vec, "fp32:384:0a"),
    }
    wire = json.loads(json.dumps(record))
    assert valid("item", wire)
    assert Item.from_json(wire).id == "i9"
    got = embedding_from_field(wire["embedding"], "fp32:384:0a", 384)
    assert got is not None and got.dtype == np.float32
    np.testing.assert_array_equal(got, vec)


@pytest.mark.parametrize(
    "field",
    [
        None,
        "not an object",
        {"encoder": "int8:384:0a", "f32": embedding_field(np.zeros(384), "x")["f32"]},
        {"encoder": "fp32:384:0a"},
        {"encoder": "fp32:384:0a", "f32": 17},
        {"encoder": "fp32:384:0a", "f32": "not base64!"},
        {"encoder": "fp32:384:0a", "f32": embedding_field(np.zeros(383), "x")["f32"]},
        {"encoder": "fp32:384:0a", "f32": embedding_field(np.full(384, np.nan), "x")["f32"]},
    ],
)
def test_an_unusable_vector_means_encoding_the_text(field: object) -> None:
    assert embedding_from_field(field, "fp32:384:0a", 384) is None
