"""A task's timeout deadline in the engine's decisions (tasker.core.writes.decide)."""

from __future__ import annotations

from datetime import timedelta

from test_writes import NOW, RULES, running, step, views
from test_writes_flow import Ended

from tasker import StepTemplate
from tasker.core import deadlines
from tasker.core.states import Status
from tasker.core.writes import decide

HOUR = timedelta(hours=1)


def _noop(task, sequence, step):  # type: ignore[no-untyped-def]
    return None


def test_a_task_past_its_deadline_ends_in_error_refusing_the_late_outcome():
    """Given a running step and a pending one, When a write is planned at the deadline with
    the running step's success, Then the outcome is refused (the step ends in error as timed
    out), nothing starts, and the task ends in error saying it timed out."""
    created = NOW - HOUR
    v = views(running("a"), step("b", deps=("a",)))
    w = decide(v, [Ended("a", ok=True)], NOW, RULES, created_at=created, deadline=NOW)
    assert w.started == []
    assert w.steps["a"].status == Status.ERROR.value
    assert w.steps["a"].results is None
    assert w.steps["a"].error is not None and "timed out" in w.steps["a"].error["message"]
    assert "b" not in w.steps
    assert w.finish is not None and w.finish.to_status is Status.ERROR
    assert w.finish.error is not None and "timed out" in w.finish.error["message"]
    assert w.finish.error["error_class"] == deadlines.TIMEOUT_CLASS


def test_a_failed_step_loses_its_next_attempt_when_the_task_times_out():
    """Given a step waiting for a retry, When the deadline passes, Then it has no next attempt."""
    v = views(step("a", Status.ERROR, next_at=NOW + HOUR, attempts=1))
    w = decide(v, [], NOW, RULES, created_at=NOW - HOUR, deadline=NOW - timedelta(seconds=1))
    assert w.steps["a"].next_attempt_at is None
    assert w.finish is not None and w.finish.to_status is Status.ERROR


def test_a_sleeping_task_is_released_until_its_deadline_when_that_comes_first():
    """Given b waits two hours after a and the task's deadline is in one hour, When a
    completes, Then the task is released until the deadline (not the wait's end)."""
    templates = {"b": StepTemplate(name="b", handler=_noop, depends_on=["a"], wait=7200)}
    v = views(running("a"), step("b", deps=("a",)))
    w = decide(
        v, [Ended("a", ok=True)], NOW, RULES, steps=templates, created_at=NOW, deadline=NOW + HOUR
    )
    assert w.steps["b"].next_attempt_at == NOW + 2 * HOUR
    assert w.finish is not None and w.finish.to_status is None
    assert w.finish.wake_at == NOW + HOUR
    assert w.notify_at == NOW + HOUR


def test_a_pass_waiting_on_running_steps_wakes_at_the_deadline():
    """Given a step still runs, When a write is planned before the deadline, Then the pass
    goes on and wakes at the deadline."""
    v = views(running("a"), step("b"))
    w = decide(v, [], NOW, RULES, running={"a"}, busy=1, deadline=NOW + HOUR)
    assert w.finish is None
    assert w.started == ["b"]
    assert w.wake_at == NOW + HOUR


def test_a_deadline_later_than_the_wait_changes_nothing():
    """Given the deadline is after the wait's end, Then the task is released until the wait."""
    templates = {"b": StepTemplate(name="b", handler=_noop, depends_on=["a"], wait=60)}
    v = views(running("a"), step("b", deps=("a",)))
    w = decide(
        v, [Ended("a", ok=True)], NOW, RULES, steps=templates, created_at=NOW, deadline=NOW + HOUR
    )
    assert w.finish is not None and w.finish.wake_at == NOW + timedelta(seconds=60)


def test_extended_gives_a_full_timeout_from_now():
    """A timed-out task that a person lets go on gets as long again as it had at first."""
    created = NOW - 2 * HOUR
    assert deadlines.extended(created, created + HOUR, NOW) == NOW + HOUR
    assert deadlines.sooner(None, NOW) == NOW and deadlines.sooner(NOW, None) == NOW
    assert not deadlines.timed_out(None, NOW)
    assert deadlines.timed_out(NOW, NOW)
