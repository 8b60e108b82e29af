"""The app's JSON codec (orjson): the documents stdlib ``json`` would write, numpy included."""

from __future__ import annotations

import json
import math
import uuid
from decimal import Decimal

import numpy as np
import pytest
from faust.serializers import codecs

from stream.faust_compat import JSON_CODEC


def test_round_trip_matches_stdlib_json() -> None:
    doc = {
        "person_id": "p-1",
        "items": [{"item_id": "i-1", "title": "Laufschuhe – 女鞋", "score": 0.125, "rank": 1}],
        "nested": {"empty": [], "none": None, "flag": True},
        "big": 2**64 - 1,  # event hashes are unsigned 64-bit
    }
    raw = codecs.dumps(JSON_CODEC, doc)
    assert isinstance(raw, bytes)
    assert json.loads(raw) == doc  # any JSON reader reads what the worker writes
    assert codecs.loads(JSON_CODEC, json.dumps(doc).encode()) == doc


def test_numpy_numbers_and_arrays_are_written_as_json() -> None:
    # stdlib json writes numpy.float64 (a float subclass); orjson alone refuses it
    doc = {
        "f64": np.float64(0.5),
        "f32": np.float32(0.25),
        "i64": np.int64(7),
        "u32": np.uint32(3),
        "vec": np.array([1.0, 2.5], dtype=np.float32),
        "round": round(np.float64(1.23456), 2),
    }
    back = json.loads(codecs.dumps(JSON_CODEC, doc))
    assert back == {"f64": 0.5, "f32": 0.25, "i64": 7, "u32": 3, "vec": [1.0, 2.5], "round": 1.23}


def test_faust_fallbacks_still_apply() -> None:
    u = uuid.UUID(int=1)
    back = json.loads(codecs.dumps(JSON_CODEC, {"id": u, "d": Decimal("1.5"), 3: "int key"}))
    assert back == {"id": str(u), "d": "1.5", "3": "int key"}


def test_nan_becomes_null_and_unknown_types_fail_loudly() -> None:
    assert json.loads(codecs.dumps(JSON_CODEC, {"x": math.nan})) == {"x": None}
    with pytest.raises(Exception, match="serializ"):
        codecs.dumps(JSON_CODEC, {"x": object()})
