"""Backoff: exponential, capped, jittered by at most 10% (never above the cap), or exact."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from tasker.core.backoff import backoff_seconds


class Fixed(random.Random):
    """A random source that always returns the same value."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(("attempts", "expected"), [(1, 2.0), (2, 4.0), (3, 8.0), (6, 64.0)])
def test_without_jitter_the_delay_doubles_with_every_attempt(attempts, expected):
    assert backoff_seconds(attempts, base=2.0, maximum=1000.0, rng=Fixed(0.0)) == expected


def test_the_delay_is_capped_at_the_maximum():
    assert backoff_seconds(10, base=1.0, maximum=300.0, rng=Fixed(0.0)) == 300.0


def test_huge_attempt_counts_do_not_overflow_and_stay_capped():
    assert backoff_seconds(10_000, base=1.0, maximum=300.0, rng=Fixed(0.0)) == 300.0


def test_zero_attempts_counts_as_the_first():
    assert backoff_seconds(0, base=3.0, maximum=100.0, rng=Fixed(0.0)) == 3.0


def test_the_largest_jitter_shortens_by_ten_percent():
    # random() < 1, so the delay is always above 90% of the base delay.
    assert backoff_seconds(1, 10.0, 100.0, rng=Fixed(0.999999)) == pytest.approx(9.00001)


@pytest.mark.parametrize("retry_after", [0, 0.5, 30, 1000.0])
def test_retry_after_is_honoured_exactly_even_beyond_the_cap(retry_after):
    delay = backoff_seconds(4, base=1.0, maximum=300.0, retry_after=retry_after, rng=Fixed(0.5))
    assert delay == float(retry_after)


def test_jitter_spreads_failures_of_many_tasks():
    rng = random.Random(42)
    delays = {backoff_seconds(3, 1.0, 300.0, rng=rng) for _ in range(50)}
    assert len(delays) > 40


@settings(max_examples=200, deadline=None, database=None)
@given(
    attempts=hs.integers(min_value=1, max_value=200),
    base=hs.one_of(hs.just(0.0), hs.floats(min_value=0.001, max_value=100.0)),
    extra=hs.floats(min_value=0.0, max_value=10_000.0),
    seed=hs.integers(min_value=0, max_value=2**32),
)
def test_jitter_is_within_ten_percent_and_never_over_the_cap(attempts, base, extra, seed):
    maximum = base + extra
    nominal = min(base * 2.0 ** (attempts - 1), maximum)
    delay = backoff_seconds(attempts, base, maximum, rng=random.Random(seed))
    assert nominal * 0.9 <= delay <= nominal <= maximum
