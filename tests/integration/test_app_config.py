"""Building a `Tasker`: URLs and settings from keywords or the environment, checked early."""

from __future__ import annotations

import pytest
from integration_support import task_class

from tasker import StepTemplate, Tasker, TaskRequest
from tasker.errors import ConfigurationError


def test_the_environment_configures_an_app_built_without_arguments(
    monkeypatch, clean_env, sqlite_url, clock
):
    """Given TASKER_DATABASE_URL and TASKER_LEASE_SECONDS, when Tasker() is built with no
    URL, then it uses that database and lease, and works."""
    monkeypatch.setenv("TASKER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("TASKER_LEASE_SECONDS", "7")
    with Tasker(clock=clock) as app:
        assert app.db.url == sqlite_url
        assert app.settings.lease_seconds == 7.0
        assert app.settings.broker_url is None
        app.migrate()
        app.register(task_class("env", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
        task = app.enqueue(TaskRequest(name="env"))
        app.run_until_idle()
        assert app.get_task(task.task_id).status == "complete"


def test_keywords_override_the_environment(monkeypatch, clean_env, tmp_path):
    monkeypatch.setenv("TASKER_DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    monkeypatch.setenv("TASKER_SWEEP_SECONDS", "9")
    with Tasker(database_url=f"sqlite:///{tmp_path}/kw.db", sweep_seconds=2) as app:
        assert app.db.url.endswith("/kw.db")
        assert app.settings.sweep_seconds == 2.0


def test_a_plain_postgresql_url_gets_the_psycopg_driver(clean_env):
    with Tasker(database_url="postgresql://root@127.0.0.1:5432/never_connected") as app:
        assert app.db.url.startswith("postgresql+psycopg://")
        assert app.db.is_postgres


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"database_url": "sqlite:///:memory:"}, "SQLite *file*"),
        ({"database_url": "sqlite://"}, "SQLite *file*"),
        ({"database_url": "mysql://db/tasker"}, "unsupported database"),
        ({"database_url": "not a url"}, "cannot parse"),
        ({"database_url": "sqlite:////no/such/folder/tasker.db"}, "does not exist"),
        ({"broker_url": "amqp://rabbit"}, "redis://"),
        ({"lease_seconds": 0}, "lease_seconds"),
        ({"max_concurrent_steps": 0}, "max_concurrent_steps"),
        ({"no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_a_bad_url_or_setting_fails_when_the_app_is_built(clean_env, tmp_path, kwargs, fragment):
    kwargs.setdefault("database_url", f"sqlite:///{tmp_path}/ok.db")
    with pytest.raises(ConfigurationError) as info:
        Tasker(**kwargs)
    assert fragment in str(info.value)
