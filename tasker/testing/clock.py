"""Helpers for testing code that uses tasker."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from tasker.core.clock import as_utc
from tasker.core.duration import to_seconds


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

    def advance(self, seconds: float | timedelta) -> datetime:
        """Move the clock forward by `seconds` (a number or a `timedelta`); the new time.

        Raises:
            TypeError: `seconds` is neither a number nor a timedelta.
            ValueError: `seconds` is negative or not finite.
        """
        step = to_seconds(seconds)
        if step < 0:
            raise ValueError("a clock cannot go back")
        with self._lock:
            self._now += timedelta(seconds=step)
            return self._now
