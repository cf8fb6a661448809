"""The app's clock: every time tasker stores or compares comes from one callable."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """The real time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def maybe_utc(value: datetime | None) -> datetime | None:
    """`as_utc` for a value that may be missing."""
    return None if value is None else as_utc(value)


def as_utc(value: datetime) -> datetime:
    """Make a datetime aware UTC (naive values from SQLite are UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)
