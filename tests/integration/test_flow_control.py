"""Waits, flow control from a handler, and pausing, on SQLite and PostgreSQL."""

from __future__ import annotations

from integration_support import task_class

from tasker import StepTemplate, TaskRequest


def _ok(task, sequence, step):  # type: ignore[no-untyped-def]
    return {"ok": True}


def test_a_new_task_shows_its_steps_waiting_for_dependencies_with_stable_keys(backend):
    """Given a chain of two steps, When enqueued, Then the second waits for dependencies,
    none has reattempted, and each step has its own idempotency key, the same on every read."""
    backend.register(
        task_class(
            "chain",
            [
                StepTemplate(name="a", handler=_ok),
                StepTemplate(name="b", handler=_ok, depends_on=["a"]),
            ],
        )
    )
    t = backend.enqueue(TaskRequest(name="chain"))
    view = backend.get_task(t.task_id)
    assert [view.steps[n].waiting_for for n in "ab"] == [None, "dependencies"]
    assert [view.steps[n].reattempts for n in "ab"] == [0, 0]
    keys = {view.steps[n].idempotency_key for n in "ab"}
    assert len(keys) == 2
    backend.run_until_idle()
    done = backend.get_task(t.task_id)
    assert done.status == "complete"
    assert {done.steps[n].idempotency_key for n in "ab"} == keys
    assert [done.steps[n].waiting_for for n in "ab"] == [None, None]
