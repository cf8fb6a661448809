"""When a failed step may be tried again."""

from __future__ import annotations

import random


def backoff_seconds(
    attempts: int,
    base: float,
    maximum: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before the next attempt.

    `retry_after` (from `RetryableError`) is honoured exactly; otherwise
    `min(base * 2**(attempts-1), maximum)`, shortened by up to 10% jitter so that
    many tasks failing together do not retry in lockstep (and the cap holds).

    Args:
        attempts: attempts made so far (at least 1).
        base: `backoff_base` in seconds.
        maximum: `backoff_max` in seconds.
        retry_after: seconds the handler asked for, if any.
        rng: random source (for tests).
    """
    if retry_after is not None:
        return float(retry_after)
    exponent = min(max(attempts, 1) - 1, 62)  # bounded so 2**n stays a float
    delay = min(base * 2.0**exponent, maximum)
    return delay * (1.0 - 0.1 * (rng or random).random())
