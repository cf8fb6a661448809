"""`tasker.testing.speedrun` on SQLite and PostgreSQL: what it drives, and where it stops."""

from __future__ import annotations

from datetime import timedelta

import pytest
from integration_support import task_class

from tasker import StepTemplate, TaskRequest, testing
from tasker.errors import SpeedrunError


def _ok(task, sequence, step):  # type: ignore[no-untyped-def]
    return {"ok": True}


def test_speedrun_stops_at_an_event_step_with_a_wait_timeout_and_goes_on_once_signalled(
    backend, clock
):
    """Given a step that waits 2 hours, then a step waiting for an event with a 3-day
    wait_timeout, When speedrun, Then it drives the 2 hours and returns with the task live
    and the step still pending, waiting for the event (not failed at its deadline), the
    clock short of that deadline; When the event is signalled and speedrun runs again, Then
    the task completes with the event's payload."""
    start = clock()
    steps = [
        StepTemplate(name="ask", handler=_ok, wait=timedelta(hours=2)),
        StepTemplate(
            name="approval", depends_on=["ask"], wait_for="approved", wait_timeout=timedelta(days=3)
        ),
        StepTemplate(name="after", handler=_ok, depends_on=["approval"]),
    ]
    backend.register(task_class("approve", steps))
    t = backend.enqueue(TaskRequest(name="approve"))

    view = testing.speedrun(backend, t.task_id)

    assert view.status == "in_progress"
    assert view.steps["ask"].status == "complete"
    approval = view.steps["approval"]
    assert (approval.status, approval.waiting_for, approval.error) == (
        "pending",
        "event:approved",
        None,
    )
    assert start + timedelta(hours=2) <= clock() < start + timedelta(hours=2, days=3)

    backend.signal(t.task_id, "approved", {"by": "ann"})
    done = testing.speedrun(backend, t.task_id)
    assert done.status == "complete"
    assert done.steps["approval"].results == {"by": "ann"}


def test_speedrun_does_not_wait_out_a_task_timeout_while_the_task_waits_for_an_event(
    backend, clock
):
    """Given a task with a one-day TaskHandler.timeout whose step waits for an event (no
    wait_timeout: the task is released idle, waking only at its deadline), When speedrun,
    Then it returns the live task waiting for the event, the clock not moved to the
    deadline; once signalled, speedrun completes it."""
    start = clock()
    handler = task_class(
        "timed", [StepTemplate(name="hold", wait_for="go"), StepTemplate(name="b", handler=_ok)]
    )
    handler.timeout = timedelta(days=1)  # type: ignore[attr-defined]
    backend.register(handler)
    t = backend.enqueue(TaskRequest(name="timed"))

    view = testing.speedrun(backend, t.task_id)

    assert (view.status, view.error) == ("in_progress", None)
    assert view.steps["hold"].waiting_for == "event:go"
    assert view.steps["b"].status == "complete"
    assert clock() < start + timedelta(days=1)

    backend.signal(t.task_id, "go")
    assert testing.speedrun(backend, t.task_id).status == "complete"


def test_speedrun_drives_a_sleeping_sibling_past_an_event_step_as_real_time_would(backend, clock):
    """Given a step waiting for an event (1-hour wait_timeout, on_failure="skip") beside a
    step that waits a day, When speedrun, Then it does not stop while the sibling still
    waits for time: the clock moves on, the event step times out on the way (skipped, as it
    would in real time) and the task completes."""
    steps = [
        StepTemplate(
            name="approval", wait_for="approved", wait_timeout=timedelta(hours=1), on_failure="skip"
        ),
        StepTemplate(name="later", handler=_ok, wait=timedelta(days=1)),
    ]
    backend.register(task_class("race", steps))
    t = backend.enqueue(TaskRequest(name="race"))

    view = testing.speedrun(backend, t.task_id)

    assert view.status == "complete"
    assert (view.steps["approval"].status, view.steps["later"].status) == ("skipped", "complete")
    assert "WaitTimeoutError" in (view.steps["approval"].error or {}).get("error_class", "")


def _parent_and_child(app, child_steps: list[StepTemplate]) -> None:  # type: ignore[no-untyped-def]
    def fan_out(task, sequence, step):  # type: ignore[no-untyped-def]
        return {"ids": [step.spawn(TaskRequest(name="kid", context={"n": i})) for i in range(2)]}

    app.register(task_class("kid", child_steps))
    app.register(
        task_class(
            "family",
            [
                StepTemplate(name="fan_out", handler=fan_out),
                StepTemplate(name="after", handler=_ok, depends_on=["fan_out"]),
            ],
        )
    )


def test_speedrun_drives_the_sleeping_children_a_step_waits_for(backend, clock):
    """Given a step spawning two children that each wait an hour, When speedrun on the
    parent, Then it moves the clock through the children's wait (the parent itself has no
    due time) and returns the parent complete with its children complete."""
    start = clock()
    _parent_and_child(backend, [StepTemplate(name="work", handler=_ok, wait=timedelta(hours=1))])
    t = backend.enqueue(TaskRequest(name="family"))

    view = testing.speedrun(backend, t.task_id)

    assert view.status == "complete"
    assert len(view.children) == 2
    assert all(backend.get_task(c).status == "complete" for c in view.children)
    assert clock() >= start + timedelta(hours=1)


def test_speedrun_stops_when_the_children_a_step_waits_for_wait_for_an_event(backend, clock):
    """Given a step spawning two children whose step waits for an event (with a day's
    wait_timeout), When speedrun on the parent, Then it returns the parent waiting for
    "children" and the children waiting for the event, not failed; When both are signalled,
    Then speedrun completes the parent."""
    start = clock()
    _parent_and_child(
        backend,
        [StepTemplate(name="hold", wait_for="go", wait_timeout=timedelta(days=1))],
    )
    t = backend.enqueue(TaskRequest(name="family"))

    view = testing.speedrun(backend, t.task_id)

    assert view.status == "in_progress"
    assert view.steps["fan_out"].waiting_for == "children"
    kids = [backend.get_task(c) for c in view.children]
    assert [k.steps["hold"].waiting_for for k in kids] == ["event:go", "event:go"]
    assert clock() < start + timedelta(days=1)

    for kid in kids:
        backend.signal(kid.task_id, "go")
    assert testing.speedrun(backend, t.task_id).status == "complete"


def test_speedrun_bounds_the_runs_of_a_child_that_polls_for_ever(backend, clock):
    """Given a parent waiting for children that reattempt for ever, When speedrun with
    max_steps=5, Then it raises SpeedrunError naming the child (it does not loop)."""

    def forever(task, sequence, step):  # type: ignore[no-untyped-def]
        step.reattempt(60)

    _parent_and_child(backend, [StepTemplate(name="poll", handler=forever)])
    t = backend.enqueue(TaskRequest(name="family"))
    with pytest.raises(SpeedrunError, match=f"a sub-task task {t.task_id} waits for"):
        testing.speedrun(backend, t.task_id, max_steps=5)
