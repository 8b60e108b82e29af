from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import Stack

# a worker script run as a subprocess by the recovery tests, not a test module
collect_ignore = ["recovery_app.py"]

DATA_DIR = Path(__file__).resolve().parents[2] / ".data"


@pytest.fixture
def stack_factory(
    bootstrap: str, encoder_dir: Path, tmp_path: Path
) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(**settings: str) -> Stack:
        stack = Stack(bootstrap, DATA_DIR, tmp_path, **settings)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()
