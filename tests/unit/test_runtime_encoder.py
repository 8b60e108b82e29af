"""The worker's encoder calls (stream.app.Runtime.embed) and the idle signal the inline
dispatcher waits for before it forms a batch (late binding)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from stream.app import Runtime
from stream.encoder import Encoder
from stream.recommend import ItemIndex
from stream.settings import Settings


class _Gated(Encoder):
    """The real encoder, held at the start of each call until the test opens the gate."""

    gate: threading.Event

    def encode_cached(self, keys, texts):  # type: ignore[no-untyped-def]
        self.gate.wait(10)
        return super().encode_cached(keys, texts)


def test_idle_is_clear_while_a_call_is_open(encoder_dir: Path) -> None:
    enc = _Gated(encoder_dir, provider="cpu")
    enc.gate = threading.Event()
    rt = Runtime(settings=Settings(), encoder=enc, index=ItemIndex(enc.dim))

    async def scenario() -> None:
        assert rt.encoder_idle.is_set() and rt.encoder_calls_open == 0
        first = asyncio.ensure_future(rt.embed(["a"], ["running shoes"]))
        second = asyncio.ensure_future(rt.embed(["b"], ["chocolate cake recipe"]))
        await asyncio.sleep(0.05)
        assert not rt.encoder_idle.is_set() and rt.encoder_calls_open == 2
        enc.gate.set()
        await asyncio.wait_for(rt.encoder_idle.wait(), 30)
        assert first.done() and second.done() and rt.encoder_calls_open == 0
        assert np.asarray(first.result()).shape == (1, enc.dim)
        assert rt.counters.encoder_batches == 2 and rt.counters.encoder_texts == 2

    asyncio.run(scenario())


def test_a_failed_call_still_leaves_the_encoder_idle(encoder_dir: Path) -> None:
    enc = Encoder(encoder_dir, provider="cpu")
    rt = Runtime(settings=Settings(), encoder=enc, index=ItemIndex(enc.dim))

    async def scenario() -> None:
        with pytest.raises(ValueError):
            await rt.embed(["a", "b"], ["only one text"])  # keys and texts disagree
        assert rt.encoder_idle.is_set() and rt.encoder_calls_open == 0

    asyncio.run(scenario())
