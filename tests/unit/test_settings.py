"""Settings: keyword arguments, then TASKER_* environment variables, then defaults."""

from __future__ import annotations

import os

import pytest

from tasker.errors import ConfigurationError
from tasker.settings import DEFAULT_DATABASE_URL, Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No TASKER_* variable of the surrounding environment leaks into these tests."""
    for name in [n for n in os.environ if n.startswith("TASKER_")]:
        monkeypatch.delenv(name)


def test_defaults_without_environment_or_arguments():
    s = Settings.load()
    assert s.database_url == DEFAULT_DATABASE_URL == "sqlite:///tasker.db"
    assert s.broker_url is None
    assert (s.lease_seconds, s.sweep_seconds) == (60.0, 5.0)
    assert (s.backoff_base, s.backoff_max) == (1.0, 300.0)


@pytest.mark.parametrize(
    ("variable", "raw", "field", "value"),
    [
        ("TASKER_DATABASE_URL", "postgresql://db/tasker", "database_url", "postgresql://db/tasker"),
        ("TASKER_BROKER_URL", "redis://cache:6379/2", "broker_url", "redis://cache:6379/2"),
        ("TASKER_LEASE_SECONDS", "12.5", "lease_seconds", 12.5),
        ("TASKER_SWEEP_SECONDS", "2", "sweep_seconds", 2.0),
        ("TASKER_BACKOFF_BASE", "0.5", "backoff_base", 0.5),
        ("TASKER_BACKOFF_MAX", "60", "backoff_max", 60.0),
        ("TASKER_MAX_CONCURRENT_STEPS", "3", "max_concurrent_steps", 3),
        ("TASKER_STEP_TIMEOUT", "9", "step_timeout", 9.0),
        ("TASKER_QUEUE_NAME", "orders", "queue_name", "orders"),
        ("TASKER_POOL_SIZE", "4", "pool_size", 4),
    ],
)
def test_each_setting_is_read_from_its_environment_variable(
    monkeypatch, variable, raw, field, value
):
    monkeypatch.setenv(variable, raw)
    loaded = getattr(Settings.load(), field)
    assert loaded == value
    assert type(loaded) is type(value)


def test_keyword_arguments_override_the_environment(monkeypatch):
    monkeypatch.setenv("TASKER_LEASE_SECONDS", "90")
    monkeypatch.setenv("TASKER_DATABASE_URL", "sqlite:///from-env.db")
    s = Settings.load(lease_seconds=7, database_url="sqlite:///from-kwargs.db")
    assert s.lease_seconds == 7.0
    assert s.database_url == "sqlite:///from-kwargs.db"


def test_a_keyword_given_as_none_falls_back_to_the_environment(monkeypatch):
    monkeypatch.setenv("TASKER_BROKER_URL", "redis://127.0.0.1:6379/0")
    assert Settings.load(broker_url=None).broker_url == "redis://127.0.0.1:6379/0"


def test_an_empty_variable_counts_as_unset(monkeypatch):
    monkeypatch.setenv("TASKER_LEASE_SECONDS", "")
    assert Settings.load().lease_seconds == 60.0


@pytest.mark.parametrize(
    ("variable", "raw", "field"),
    [
        ("TASKER_LEASE_SECONDS", "soon", "lease_seconds"),
        ("TASKER_LEASE_SECONDS", "0", "lease_seconds"),
        ("TASKER_SWEEP_SECONDS", "-1", "sweep_seconds"),
        ("TASKER_STEP_TIMEOUT", "0", "step_timeout"),
        ("TASKER_MAX_CONCURRENT_STEPS", "2.5", "max_concurrent_steps"),
        ("TASKER_MAX_CONCURRENT_STEPS", "0", "max_concurrent_steps"),
        ("TASKER_POOL_SIZE", "0", "pool_size"),
        ("TASKER_BACKOFF_BASE", "-1", "backoff"),
        ("TASKER_BACKOFF_MAX", "0.5", "backoff"),  # below the default base of 1
        ("TASKER_BROKER_URL", "amqp://rabbit", "broker_url"),
    ],
)
def test_a_bad_environment_value_is_a_configuration_error(monkeypatch, variable, raw, field):
    monkeypatch.setenv(variable, raw)
    with pytest.raises(ConfigurationError, match=field):
        Settings.load()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lease_seconds": "abc"},
        {"lease_seconds": -5},
        {"sweep_seconds": 0},
        {"backoff_base": 10, "backoff_max": 5},
        {"max_concurrent_steps": 0},
        {"broker_url": "http://example.com"},
        {"broker_url": ""},
        {"no_such_setting": 1},
    ],
)
def test_a_bad_keyword_is_a_configuration_error(kwargs):
    with pytest.raises(ConfigurationError):
        Settings.load(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"lease_seconds": "nan"}, {"lease_seconds": "inf"}, {"backoff_max": float("nan")}],
)
def test_a_non_finite_number_is_a_configuration_error(kwargs):
    with pytest.raises(ConfigurationError):
        Settings.load(**kwargs)


def test_a_redis_broker_url_is_accepted():
    assert Settings.load(broker_url="rediss://h:6380/1").broker_url == "rediss://h:6380/1"
