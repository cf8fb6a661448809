"""A task mixing a step that awaits its sub-tasks with a step that waits for an event."""

from __future__ import annotations

from datetime import timedelta

from integration_support import task_class

from tasker import StepTemplate, TaskRequest


def _later(task, sequence, step):  # type: ignore[no-untyped-def]
    return {"n": task.context.get("n")}


def _fan_out(task, sequence, step):  # type: ignore[no-untyped-def]
    return {"ids": [step.spawn(TaskRequest(name="kid", context={"n": i})) for i in range(2)]}


def _take(task, sequence, step):  # type: ignore[no-untyped-def]
    return {"got": step.event}


def test_a_step_awaiting_children_and_a_step_waiting_for_an_event_both_complete(backend, clock):
    """Given a task with a step that spawns and awaits two children (which run an hour
    later) and an independent step waiting for "go", when the children finish and then
    "go" is signalled, then both steps complete and so does the task."""
    backend.register(
        task_class("kid", [StepTemplate(name="work", handler=_later, after=timedelta(hours=1))])
    )
    backend.register(
        task_class(
            "mixed",
            [
                StepTemplate(name="fan_out", handler=_fan_out),
                StepTemplate(name="gate", handler=_take, wait_for="go"),
            ],
        )
    )
    t = backend.enqueue(TaskRequest(name="mixed")).task_id
    backend.run_until_idle()
    view = backend.get_task(t)
    assert view.steps["fan_out"].waiting_for == "children"
    assert view.steps["gate"].waiting_for == "event:go"
    clock.advance(3601)
    backend.run_until_idle()
    assert all(backend.get_task(c).status == "complete" for c in backend.get_task(t).children)
    view = backend.get_task(t)
    assert view.steps["fan_out"].status == "complete", view.steps["fan_out"]
    assert view.steps["gate"].waiting_for == "event:go"
    backend.signal(t, "go", {"ok": 1})
    backend.run_until_idle()
    view = backend.get_task(t)
    assert (view.steps["fan_out"].status, view.steps["gate"].status) == ("complete", "complete")
    assert view.steps["gate"].results == {"got": {"ok": 1}}
    assert view.status == "complete"


def test_the_event_first_then_the_children_the_task_completes(backend, clock):
    """Given the same task, when "go" is signalled before the children run, then the
    waiting step completes at once, and the awaiting step once the children have."""
    backend.register(
        task_class("kid", [StepTemplate(name="work", handler=_later, after=timedelta(hours=1))])
    )
    backend.register(
        task_class(
            "mixed",
            [
                StepTemplate(name="fan_out", handler=_fan_out),
                StepTemplate(name="gate", handler=_take, wait_for="go"),
            ],
        )
    )
    t = backend.enqueue(TaskRequest(name="mixed")).task_id
    backend.run_until_idle()
    backend.signal(t, "go", {"ok": 2})
    backend.run_until_idle()
    view = backend.get_task(t)
    assert (view.steps["fan_out"].waiting_for, view.steps["gate"].status) == (
        "children",
        "complete",
    )
    clock.advance(3601)
    backend.run_until_idle()
    view = backend.get_task(t)
    assert view.steps["fan_out"].status == "complete"
    assert view.status == "complete"
