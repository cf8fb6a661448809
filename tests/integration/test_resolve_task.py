"""`app.resolve_task`: a person declares a task done by hand, on SQLite and PostgreSQL.

Each test reads Given / When / Then.
"""

from __future__ import annotations

import pytest
from integration_support import EventLog, check_history, task_class

from tasker import PermanentError, RetryableError, StepTemplate, TaskRequest, errors


def failing(exc):
    """A step handler that always raises `exc`."""

    def handle(task, sequence, step):
        raise exc

    return handle


def diamond(app, log, fail):
    """Register `diamond`: root -> (left, right) -> join, with `left` raising `fail`."""
    app.register(
        task_class(
            "diamond",
            [
                StepTemplate(name="root", handler=log.recorder()),
                StepTemplate(name="left", handler=failing(fail), depends_on=["root"]),
                StepTemplate(name="right", handler=log.recorder(), depends_on=["root"]),
                StepTemplate(name="join", handler=log.recorder(), depends_on=["left", "right"]),
                StepTemplate(name="extra", handler=log.recorder(), skippable=True),
            ],
        )
    )


def test_a_task_in_error_resolved_by_hand_is_final_with_its_unfinished_steps(backend, clock):
    """Given a task in error (left failed for good, so join never ran; extra was bypassed),
    when a person resolves the task with a reason,
    then the task is resolved_manually and final (completed_at now, nothing due), its
    failed and pending steps are resolved_manually, its complete and skipped steps stay,
    the history records each change with the reason, and no handler runs afterwards."""
    log = EventLog()
    diamond(backend, log, PermanentError("card declined"))
    task = backend.enqueue(TaskRequest(name="diamond", bypass_steps=["extra"]))
    backend.run_until_idle()
    assert backend.get_task(task.task_id).status == "error"
    clock.advance(60)

    view = backend.resolve_task(task.task_id, reason="refunded by support")

    assert (view.status, view.completed_at, view.next_run_at) == (
        "resolved_manually",
        clock(),
        None,
    )
    assert {n: s.status for n, s in view.steps.items()} == {
        "root": "complete",
        "left": "resolved_manually",
        "right": "complete",
        "join": "resolved_manually",
        "extra": "skipped",
    }
    assert view.steps["left"].error["message"] == "card declined"  # the failure is kept
    assert view.steps["join"].processed_at == clock()
    chains = check_history(backend, task.task_id)
    assert [(t.from_status, t.to_status, t.reason) for t in chains[None][-1:]] == [
        ("error", "resolved_manually", "refunded by support")
    ]
    for name, before in (("left", "error"), ("join", "pending")):
        last = chains[name][-1]
        assert (last.from_status, last.to_status, last.reason) == (
            before,
            "resolved_manually",
            "refunded by support",
        )
    # In the trail, the task's end comes after the changes of its steps, as a finish does.
    last = backend.history(task.task_id)[-3:]
    assert [(t.step, t.to_status) for t in last] == [
        ("left", "resolved_manually"),
        ("join", "resolved_manually"),
        (None, "resolved_manually"),
    ]
    started = list(log.events)
    clock.advance(3600)
    assert backend.run_until_idle() == 0
    assert log.events == started
    assert backend.get_task(task.task_id) == view


def test_a_pending_task_resolved_by_hand_never_runs(backend):
    """Given a task enqueued but not run yet (its message waits),
    when a person resolves it,
    then all its steps are resolved_manually, the task is final, and running what is
    waiting starts no step handler."""
    log = EventLog()
    diamond(backend, log, PermanentError("never reached"))
    task = backend.enqueue(TaskRequest(name="diamond"))

    view = backend.resolve_task(task.task_id, reason="done elsewhere")

    assert view.status == "resolved_manually"
    assert {s.status for s in view.steps.values()} == {"resolved_manually"}
    backend.run_until_idle()
    assert log.events == []
    assert backend.get_task(task.task_id).status == "resolved_manually"
    check_history(backend, task.task_id)


def test_resolving_a_task_that_is_complete_cancelled_or_running_is_refused(backend, clock):
    """Given a complete task, a cancelled task and a task whose step awaits its retry
    (in_progress: the engine still works on it),
    when a person tries to resolve each, then each raises InvalidTransitionError and
    neither the task nor its history changes."""
    log = EventLog()
    backend.register(task_class("one", [StepTemplate(name="s", handler=log.recorder())]))
    backend.register(
        task_class(
            "flaky",
            [StepTemplate(name="s", handler=failing(RetryableError("later", retry_after=30)))],
        )
    )
    complete = backend.enqueue(TaskRequest(name="one"))
    backend.run_until_idle()
    cancelled = backend.cancel(backend.enqueue(TaskRequest(name="one")).task_id)
    waiting = backend.enqueue(TaskRequest(name="flaky"))
    backend.run_until_idle()
    assert backend.get_task(waiting.task_id).steps["s"].next_attempt_at is not None

    for task_id, status in (
        (complete.task_id, "complete"),
        (cancelled.task_id, "cancelled"),
        (waiting.task_id, "in_progress"),
    ):
        before, history = backend.get_task(task_id), backend.history(task_id)
        assert before.status == status
        with pytest.raises(errors.InvalidTransitionError, match=status):
            backend.resolve_task(task_id, reason="by hand")
        assert backend.get_task(task_id) == before
        assert backend.history(task_id) == history


def test_resolving_a_resolved_task_again_changes_nothing(backend):
    """Given a task already resolved by hand,
    when it is resolved again, then its view and history stay as they were."""
    backend.register(task_class("one", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    task = backend.enqueue(TaskRequest(name="one"))
    first = backend.resolve_task(task.task_id, reason="first")
    history = backend.history(task.task_id)

    again = backend.resolve_task(task.task_id, reason="second")

    assert again == first
    assert backend.history(task.task_id) == history


def test_resolve_task_checks_its_arguments(backend):
    """Given a task, when resolve_task gets an id that names no task or a reason that is
    not a string of at most 255 characters, then it raises (TaskNotFoundError,
    InvalidRequestError) and the task is left as it was."""
    backend.register(task_class("one", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    task = backend.enqueue(TaskRequest(name="one"))
    for missing in (task.task_id + 1000, 0, "1"):
        with pytest.raises(errors.TaskNotFoundError):
            backend.resolve_task(missing, reason="by hand")
    for bad in (None, 42, "r" * 256):
        with pytest.raises(errors.InvalidRequestError):
            backend.resolve_task(task.task_id, reason=bad)
    assert backend.get_task(task.task_id).status == "pending"


def test_a_task_resolved_by_hand_cannot_be_steered_any_more(backend):
    """Given a task resolved by hand (final),
    when a person tries to cancel it, retry it or resolve one of its steps,
    then each raises InvalidTransitionError and the task stays as it was."""
    backend.register(
        task_class("one", [StepTemplate(name="s", handler=failing(PermanentError("no")))])
    )
    task = backend.enqueue(TaskRequest(name="one"))
    backend.run_until_idle()
    resolved = backend.resolve_task(task.task_id, reason="by hand")
    history = backend.history(task.task_id)

    for steer in (
        lambda: backend.cancel(task.task_id),
        lambda: backend.retry(task.task_id),
        lambda: backend.resolve_step(task.task_id, "s"),
    ):
        with pytest.raises(errors.InvalidTransitionError):
            steer()
    assert backend.get_task(task.task_id) == resolved
    assert backend.history(task.task_id) == history
