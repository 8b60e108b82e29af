"""Session fixtures: one embedded broker and one exported encoder for the whole run.

Integration tests get a fresh topic prefix and consumer group per test (``worker_factory``), so
they never see each other's messages. ``CROSSPROFILE_BROKER`` points them at a real Kafka instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / ".data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def encoder_dir() -> Path:
    from export.encoder_export import ensure_encoder

    return ensure_encoder(Settings(data_dir=DATA_DIR), progress=False)


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    from stream.broker import kafka_for

    with kafka_for(Settings()) as address:
        yield address
