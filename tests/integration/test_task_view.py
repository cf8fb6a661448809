"""What a task's view shows of the request that created it, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from integration_support import task_class

from tasker import StepTemplate, TaskRequest
from tasker.errors import PermanentError


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


def test_the_steps_of_a_task_that_ended_in_error_wait_for_nothing(backend, clock):
    """Given a task with a one-hour timeout whose steps wait for an event, for two hours,
    and after a step that fails for good, when it has timed out (in `error`), then none
    of its pending steps shows a `waiting_for` (they run only if a person retries the
    task), in `get_task` and in `list_tasks`; retried, they wait again."""

    def broken(task, sequence, step):  # type: ignore[no-untyped-def]
        raise PermanentError("no")

    def ok(task, sequence, step):  # type: ignore[no-untyped-def]
        return {}

    steps = [
        StepTemplate(name="first", handler=broken),
        StepTemplate(name="then", handler=ok, depends_on=["first"]),
        StepTemplate(name="gate", handler=ok, wait_for="go"),
        StepTemplate(name="later", handler=ok, wait=timedelta(hours=2)),
    ]
    cls = type("Ends", (task_class("ends", steps),), {"timeout": timedelta(hours=1)})
    backend.register(cls)
    t = backend.enqueue(TaskRequest(name="ends")).task_id
    backend.run_until_idle()
    waiting = {n: s.waiting_for for n, s in backend.get_task(t).steps.items()}
    assert waiting == {"first": None, "then": "dependencies", "gate": "event:go", "later": "time"}
    clock.advance(timedelta(hours=1, seconds=1))
    backend.run_until_idle()
    view = backend.get_task(t)
    assert view.status == "error"
    assert {n: (s.status, s.waiting_for) for n, s in view.steps.items()} == {
        "first": ("error", None),
        "then": ("pending", None),
        "gate": ("pending", None),
        "later": ("pending", None),
    }
    (listed,) = backend.list_tasks()
    assert [s.waiting_for for s in listed.steps.values()] == [None] * 4
    backend.retry(t)
    view = backend.get_task(t)
    assert (view.steps["then"].waiting_for, view.steps["gate"].waiting_for) == (
        "dependencies",
        "event:go",
    )
