"""Helpers for testing code that uses tasker."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from tasker.core.clock import as_utc


class FakeClock:
    """A clock that only moves when told to: pass it as `Tasker(clock=...)`.

    Args:
        start: the initial time (default: now, UTC).
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = as_utc(start) if start is not None else datetime.now(timezone.utc)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        """The current fake time."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward by `seconds` and return the new time.

        Raises:
            ValueError: `seconds` is negative.
        """
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now
