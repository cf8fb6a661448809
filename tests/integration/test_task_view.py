"""What a task's view shows of the request that created it, on SQLite and PostgreSQL."""

from __future__ import annotations

from integration_support import task_class

from tasker import StepTemplate, TaskRequest


def test_the_view_shows_the_steps_the_request_bypassed(backend):
    """Given a task enqueued bypassing two skippable steps (named out of order, one twice),
    then the view returned by enqueue, get_task and list_tasks all show them, sorted,
    and a task that bypassed nothing shows none."""
    steps = [StepTemplate(name=n, handler=lambda t, q, s: {}, skippable=n != "a") for n in "abc"]
    backend.register(task_class("bypass", steps))

    enqueued = backend.enqueue(TaskRequest(name="bypass", bypass_steps=["c", "b", "c"]))
    plain = backend.enqueue(TaskRequest(name="bypass"))

    assert list(enqueued.bypass_steps) == ["b", "c"]
    assert list(backend.get_task(enqueued.task_id).bypass_steps) == ["b", "c"]
    listed = {t.task_id: list(t.bypass_steps) for t in backend.list_tasks()}
    assert listed == {enqueued.task_id: ["b", "c"], plain.task_id: []}
    assert list(plain.bypass_steps) == []
    assert {n: s.status for n, s in enqueued.steps.items()} == {
        "a": "pending",
        "b": "skipped",
        "c": "skipped",
    }
