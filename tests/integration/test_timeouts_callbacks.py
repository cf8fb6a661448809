"""Task timeouts and finish callbacks, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from integration_support import task_class

from tasker import StepTemplate, Tasker, TaskRequest
from tasker.errors import InvalidStateError
from tasker.store import schema as m

HOUR = 3600


def _ok(task, sequence, step):  # type: ignore[no-untyped-def]
    return {"ok": True}


def _finishing(name: str, templates: list[StepTemplate], seen: list[Any], **attrs: Any) -> Any:
    cls = task_class(name, templates)
    for key, value in attrs.items():
        setattr(cls, key, value)

    def on_finish(self, task):  # type: ignore[no-untyped-def]
        seen.append((task.task_id, task.status))

    cls.on_finish = on_finish
    return cls


def _owed(app: Tasker, task_id: int) -> Any:
    with app.db.read() as conn:
        return conn.execute(
            sa.select(m.tasks.c.finish_due_at).where(m.tasks.c.task_id == task_id)
        ).scalar()


def _pauses(task, sequence, step):  # type: ignore[no-untyped-def]
    task.pause("a person looks")


def test_a_paused_task_times_out_at_its_deadline_and_on_finish_sees_the_error(backend, clock):
    """Given a task with a one-hour timeout paused by its step, When the clock passes the
    deadline, Then the sweeper's pass ends it in error saying it timed out, `on_finish` is
    called once with it, and resume is refused."""
    seen: list[Any] = []
    backend.register(
        _finishing("held", [StepTemplate(name="a", handler=_pauses)], seen, timeout=HOUR)
    )
    t = backend.enqueue(TaskRequest(name="held"))
    backend.run_until_idle()
    assert backend.get_task(t.task_id).status == "paused"
    clock.advance(HOUR - 1)
    backend.run_until_idle()
    assert backend.get_task(t.task_id).status == "paused"
    clock.advance(2)
    backend.run_until_idle()
    task = backend.get_task(t.task_id)
    assert task.status == "error"
    assert task.error is not None and "timed out" in task.error["message"]
    assert seen == [(t.task_id, "error")]
    assert _owed(backend, t.task_id) is None
    with pytest.raises(InvalidStateError):
        backend.resume(t.task_id)
    reasons = [h.reason for h in backend.history(t.task_id) if h.step is None]
    assert any("timed out" in r for r in reasons) and "on_finish called" in reasons


def test_a_task_idle_until_an_event_times_out_at_its_deadline(backend, clock):
    """Given a task with a one-hour timeout whose only step waits for an event that never
    comes (the task is released idle, until nudged), When the clock passes the deadline,
    Then it ends in error saying it timed out and `on_finish` sees it; before the fix it
    stayed in progress for ever (its release had no wake-up at the deadline)."""
    seen: list[Any] = []
    steps = [StepTemplate(name="hold", wait_for="never_sent")]
    backend.register(_finishing("idle", steps, seen, timeout=HOUR))
    t = backend.enqueue(TaskRequest(name="idle"))
    backend.run_until_idle()
    task = backend.get_task(t.task_id)
    assert task.status == "in_progress" and task.next_run_at == task.deadline_at
    clock.advance(HOUR + 1)
    backend.run_until_idle()
    task = backend.get_task(t.task_id)
    assert task.status == "error"
    assert task.error is not None and "timed out" in task.error["message"]
    assert seen == [(t.task_id, "error")]


def test_a_step_running_at_the_deadline_has_its_outcome_refused(backend, clock):
    """Given a step that runs past the task's deadline (the clock moves on inside it), When
    it returns, Then its outcome is not recorded, its dependent never starts, and the task
    ends in error."""
    ran: list[str] = []

    def slow(task, sequence, step):  # type: ignore[no-untyped-def]
        clock.advance(2 * HOUR)
        return {"late": True}

    def after(task, sequence, step):  # type: ignore[no-untyped-def]
        ran.append("after")

    backend.register(
        _finishing(
            "slowpoke",
            [
                StepTemplate(name="slow", handler=slow),
                StepTemplate(name="after", handler=after, depends_on=["slow"]),
            ],
            [],
            timeout=HOUR,
        )
    )
    t = backend.enqueue(TaskRequest(name="slowpoke"))
    backend.run_until_idle()
    task = backend.get_task(t.task_id)
    assert task.status == "error"
    assert task.steps["slow"].status == "error"
    assert task.steps["slow"].results is None
    assert task.steps["after"].status == "pending"
    assert ran == []


def test_a_retry_of_a_timed_out_task_goes_on_with_a_new_deadline(backend, clock):
    """Given a task that timed out while sleeping, When a person retries it, Then it goes
    on (its error cleared) with a deadline a full timeout from now, and completes."""
    backend.register(
        _finishing(
            "sleepy",
            [
                StepTemplate(name="a", handler=_ok),
                StepTemplate(name="b", handler=_ok, depends_on=["a"], wait=2 * HOUR),
            ],
            [],
            timeout=3 * HOUR,
        )
    )
    t = backend.enqueue(TaskRequest(name="sleepy"))
    backend.run_until_idle()
    clock.advance(HOUR)
    backend.run_until_idle()
    assert backend.get_task(t.task_id).status == "in_progress"
    backend.register(
        _finishing(
            "sleepy",
            [
                StepTemplate(name="a", handler=_ok),
                StepTemplate(name="b", handler=_ok, depends_on=["a"], wait=2 * HOUR),
            ],
            [],
            timeout=HOUR,
            version="0.2.0",
        )
    )
    t2 = backend.enqueue(TaskRequest(name="sleepy", version="0.2.0"))
    backend.run_until_idle()
    clock.advance(HOUR + 1)
    backend.run_until_idle()
    late = backend.get_task(t2.task_id)
    assert late.status == "error" and late.error is not None
    backend.retry(t2.task_id)
    view = backend.get_task(t2.task_id)
    assert view.error is None
    assert view.deadline_at == clock() + timedelta(hours=1)
    clock.advance(HOUR - 1)  # b's wait (2 h after a) has passed, the new deadline has not
    backend.run_until_idle()
    assert backend.get_task(t2.task_id).status == "complete"


def test_cancel_through_steering_calls_on_finish_once(backend, clock):
    """Given a sleeping task, When a person cancels it, Then `on_finish` is called once with
    the cancelled task, after the status is committed, and nothing is owed any more."""
    seen: list[Any] = []
    backend.register(
        _finishing("cancellable", [StepTemplate(name="a", handler=_ok, wait=HOUR)], seen)
    )
    t = backend.enqueue(TaskRequest(name="cancellable"))
    backend.run_until_idle()
    backend.cancel(t.task_id)
    assert seen == [(t.task_id, "cancelled")]
    assert _owed(backend, t.task_id) is None
    clock.advance(2 * HOUR)
    backend.run_until_idle()
    assert seen == [(t.task_id, "cancelled")]


def test_a_cancel_from_a_step_and_an_error_ending_call_on_finish(backend, clock):
    """Given tasks ended by `task.cancel()` and by a step failing for good, Then each gets
    its `on_finish` with that status."""
    seen: list[Any] = []

    def cancels(task, sequence, step):  # type: ignore[no-untyped-def]
        task.cancel("no longer needed")

    def fails(task, sequence, step):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    backend.register(_finishing("self_cancel", [StepTemplate(name="a", handler=cancels)], seen))
    backend.register(
        _finishing("fails", [StepTemplate(name="a", handler=fails, retryable=False)], seen)
    )
    a = backend.enqueue(TaskRequest(name="self_cancel"))
    b = backend.enqueue(TaskRequest(name="fails"))
    backend.run_until_idle()
    assert sorted(seen) == sorted([(a.task_id, "cancelled"), (b.task_id, "error")])


def test_on_finish_runs_after_a_worker_died_before_calling_it(make_app, clock):
    """Given a worker whose engine committed the task's end but died before `on_finish`
    ran (the call is left owed), When another app sweeps after a lease period, Then it
    runs the call once and records it."""
    seen: list[Any] = []
    cls = _finishing("survivor", [StepTemplate(name="a", handler=_ok)], seen)
    dying = make_app()
    dying.register(cls)
    dying.engine._finished = None  # the process dies between the commit and the call
    t = dying.enqueue(TaskRequest(name="survivor"))
    dying.run_until_idle()
    assert dying.get_task(t.task_id).status == "complete"
    assert seen == [] and _owed(dying, t.task_id) is not None
    other = make_app()
    other.register(cls)
    other.run_until_idle()
    assert seen == []  # the dead worker's claim still holds for a lease period
    clock.advance(other.settings.lease_seconds + 1)
    other.run_until_idle()
    other.run_until_idle()
    assert seen == [(t.task_id, "complete")]
    assert _owed(other, t.task_id) is None
    assert "on_finish called" in [h.reason for h in other.history(t.task_id)]


def test_a_bad_timeout_is_refused_at_registration(backend):
    """A timeout that is not a positive duration is a ConfigurationError naming it."""
    from tasker.errors import ConfigurationError

    for bad in (0, -5, "1h", True):
        cls = task_class("bad_timeout", [StepTemplate(name="a", handler=_ok)])
        cls.timeout = bad
        with pytest.raises(ConfigurationError, match="timeout"):
            backend.register(cls)
