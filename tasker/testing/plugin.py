"""The pytest plugin that tasker installs (entry point ``pytest11``: ``tasker``).

It gives a user's own test suite two fixtures:

- ``fake_clock``: a :class:`~tasker.testing.FakeClock`, time that moves only when told.
- ``tasker_app``: an embedded :class:`~tasker.Tasker` on a temporary SQLite file, migrated,
  whose clock is ``fake_clock``; closed after the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tasker.app import Tasker
from tasker.testing.clock import FakeClock


@pytest.fixture
def fake_clock() -> FakeClock:
    """A FakeClock for the test: advance it to run waits, backoffs and reattempts."""
    return FakeClock()


@pytest.fixture
def tasker_app(tmp_path: Path, fake_clock: FakeClock) -> Iterator[Tasker]:
    """An embedded, migrated app on a temporary SQLite file, on the test's FakeClock."""
    app = Tasker(database_url=f"sqlite:///{tmp_path / 'tasker.db'}", clock=fake_clock)
    app.migrate()
    try:
        yield app
    finally:
        app.close()
