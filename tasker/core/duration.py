"""Durations: seconds (int or float) or `timedelta`, and the text form "30d", "12h", ..."""

from __future__ import annotations

import math
import re
from datetime import timedelta

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_TEXT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def to_seconds(value: object) -> float:
    """A duration given as seconds or a `timedelta`, in seconds.

    Raises:
        TypeError: it is neither (a bool is not a number of seconds).
        ValueError: it is not finite.
    """
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"a duration is seconds or a timedelta, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"a duration must be finite, got {value!r}")
    return float(value)


def parse_duration(text: str) -> float:
    """Seconds of a duration written as a number and an optional unit: "30d", "12h", "90".

    Units: s, m, h, d, w (no unit: seconds).

    Raises:
        ValueError: the text is not of that form.
    """
    match = _TEXT.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (try 30d, 12h, 90m or 45s)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]
