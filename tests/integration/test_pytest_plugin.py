"""The pytest plugin installed with tasker: the `tasker_app` and `fake_clock` fixtures.

These tests take the fixtures by name without importing them: they are found only because
the package registers `tasker.testing.plugin` under the `pytest11` entry point.
"""

from __future__ import annotations

from datetime import timedelta
from importlib.metadata import entry_points

from integration_support import task_class

from tasker import StepTemplate, TaskRequest
from tasker.errors import RetryableError
from tasker.testing import FakeClock


def test_the_plugin_is_registered_under_the_pytest11_entry_point() -> None:
    """Given the installed package, its pytest11 entry point names the plugin module."""
    names = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert names.get("tasker") == "tasker.testing.plugin"


def test_tasker_app_is_embedded_migrated_and_on_the_fake_clock(tasker_app, fake_clock) -> None:
    """Given the fixtures, the app runs a task on SQLite and tells time by the fake clock."""
    assert isinstance(fake_clock, FakeClock)
    assert tasker_app.settings.database_url.startswith("sqlite:///")
    before = tasker_app.now()
    fake_clock.advance(3600)
    assert tasker_app.now() - before == timedelta(hours=1)

    calls: list[int] = []

    def flaky(task, sequence, step):
        calls.append(1)
        if len(calls) == 1:
            raise RetryableError("busy", retry_after=600)
        return {"ok": True}

    tasker_app.register(task_class("plugged", [StepTemplate(name="a", handler=flaky)]))
    t = tasker_app.enqueue(TaskRequest(name="plugged"))
    tasker_app.run_until_idle()
    waiting = tasker_app.get_task(t.task_id)
    assert waiting.status != "complete"  # the step waits out its backoff by the fake clock
    assert waiting.steps["a"].attempts == 1
    fake_clock.advance(601)
    tasker_app.run_until_idle()
    assert tasker_app.get_task(t.task_id).status == "complete"
    assert len(calls) == 2
