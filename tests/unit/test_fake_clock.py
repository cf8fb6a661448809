"""FakeClock: moved by seconds or a timedelta, never back."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tasker.testing.clock import FakeClock

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_advance_takes_seconds_or_a_timedelta():
    """Given a fake clock, When it is advanced by 90 s and then by a timedelta of 2 days,
    Then it shows both moves (as the README's `fake_clock.advance(timedelta(...))` does)."""
    clock = FakeClock(START)
    assert clock.advance(90) == START + timedelta(seconds=90)
    assert clock.advance(timedelta(days=2)) == START + timedelta(days=2, seconds=90)
    assert clock() == START + timedelta(days=2, seconds=90)


@pytest.mark.parametrize("bad", [-1, timedelta(seconds=-1), "10", float("inf")])
def test_advance_refuses_a_negative_or_non_numeric_step_and_stays(bad):
    """Given a fake clock, When advanced by a negative, non-numeric or infinite step,
    Then it raises and has not moved."""
    clock = FakeClock(START)
    with pytest.raises((TypeError, ValueError)):
        clock.advance(bad)
    assert clock() == START
