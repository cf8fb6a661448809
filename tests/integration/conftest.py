"""Fixtures of the integration tests (the backends themselves are in tests/conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An event that step handlers may block on; set when the test ends, so none hangs on."""
    event = threading.Event()
    yield event
    event.set()
