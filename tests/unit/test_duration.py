"""Durations (seconds, timedelta, "30d") and the `retention` setting built on them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tasker.core.duration import parse_duration, to_seconds
from tasker.errors import ConfigurationError
from tasker.settings import Settings


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 2592000), ("12h", 43200), ("90m", 5400), ("45s", 45), ("45", 45), ("1.5w", 907200)],
)
def test_parse_duration_reads_a_number_and_a_unit(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "-1d", "3 days", "1e3", "1y"])
def test_parse_duration_refuses_anything_else(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_to_seconds_takes_numbers_and_timedeltas_only():
    assert to_seconds(timedelta(minutes=2)) == 120
    assert to_seconds(1.5) == 1.5
    for bad in (True, "5", None):
        with pytest.raises(TypeError):
            to_seconds(bad)
    with pytest.raises(ValueError, match="finite"):
        to_seconds(float("inf"))


def test_retention_setting_takes_a_timedelta_seconds_or_the_variable(monkeypatch):
    """Given retention as a timedelta, as seconds, or TASKER_RETENTION=30d, then the
    setting is that many seconds; by default it is None (keep everything)."""
    monkeypatch.delenv("TASKER_RETENTION", raising=False)
    assert Settings.load().retention is None
    assert Settings.load(retention=timedelta(days=30)).retention == 2592000
    assert Settings.load(retention=3600).retention == 3600
    monkeypatch.setenv("TASKER_RETENTION", "30d")
    assert Settings.load().retention == 2592000


@pytest.mark.parametrize("value", [0, -5, timedelta(seconds=-1), "soon", True])
def test_a_retention_that_is_not_a_positive_duration_is_a_configuration_error(value):
    with pytest.raises(ConfigurationError, match="retention"):
        Settings.load(retention=value)
