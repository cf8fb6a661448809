"""`app.update_task`, `app.update_step` and `app.cancel_step`, on SQLite and PostgreSQL.

Each test reads Given / When / Then.
"""

from __future__ import annotations

import pytest
from integration_support import EventLog, check_history, task_class

from tasker import PermanentError, RetryableError, StepTemplate, TaskRequest, errors


def failing(exc):
    def handle(task, sequence, step):
        raise exc

    return handle


def chain(app, log, first):
    """Register `chain`: a (handler `first`, 1 attempt) -> b -> c."""
    app.register(
        task_class(
            "chain",
            [
                StepTemplate(name="a", handler=first, retry_limit=1),
                StepTemplate(name="b", handler=log.recorder(), depends_on=["a"]),
                StepTemplate(name="c", handler=log.recorder(), depends_on=["b"]),
            ],
        )
    )


def test_update_task_changes_reason_and_tags_only(backend):
    """Given a task, when its reason and then its tags are changed, then the view shows
    each change and keeps everything else; bad values are refused and change nothing."""
    chain(backend, EventLog(), EventLog().recorder())
    tid = backend.enqueue(TaskRequest(name="chain", reason="first", tags=["a"])).task_id

    view = backend.update_task(tid, reason="customer called")
    assert (view.reason, list(view.tags)) == ("customer called", ["a"])
    view = backend.update_task(tid, tags=["vip", "eu"])
    assert (view.reason, list(view.tags), view.status) == (
        "customer called",
        ["vip", "eu"],
        "pending",
    )

    for bad in (
        {"reason": ""},
        {"reason": "x" * 256},
        {"tags": "vip"},
        {"tags": [1]},
        {"reason": "a\x00b"},  # PostgreSQL cannot store NUL: refused, not a DataError
        {"tags": ["a\x00b"]},
    ):
        with pytest.raises(errors.InvalidRequestError):
            backend.update_task(tid, **bad)
    with pytest.raises(errors.TaskNotFoundError):
        backend.update_task(10**9, reason="x")
    assert backend.get_task(tid).reason == "customer called"


def test_update_step_raises_the_budget_of_a_pending_step(backend, clock):
    """Given a step that always fails with one attempt allowed, when its retry_limit is
    raised to 3 before the task runs, then it is attempted 3 times before failing."""
    log = EventLog()
    chain(backend, log, failing(RetryableError("flaky")))
    tid = backend.enqueue(TaskRequest(name="chain")).task_id

    view = backend.update_step(tid, "a", retry_limit=3, inputs={"card": "new"})
    assert (view.steps["a"].retry_limit, view.steps["a"].inputs) == (3, {"card": "new"})
    for _ in range(10):
        backend.run_until_idle()
        clock.advance(600)
    task = backend.get_task(tid)
    assert task.status == "error"
    assert task.steps["a"].attempts == 3
    check_history(backend, tid)


def test_update_step_refuses_a_finished_step_or_task(backend):
    """Given a complete step, a finished task and bad values, when update_step is asked,
    then InvalidStateError (409) or InvalidRequestError, and nothing changes."""
    log = EventLog()
    chain(backend, log, log.recorder())
    tid = backend.enqueue(TaskRequest(name="chain")).task_id
    with pytest.raises(errors.InvalidRequestError, match="retry_limit"):
        backend.update_step(tid, "a", retry_limit=0)
    with pytest.raises(errors.InvalidRequestError, match="inputs"):
        backend.update_step(tid, "a", inputs=[1])
    with pytest.raises(errors.StepNotFoundError):
        backend.update_step(tid, "nope", retry_limit=2)
    backend.run_until_idle()
    with pytest.raises(errors.InvalidStateError, match="complete"):
        backend.update_step(tid, "a", retry_limit=5)
    assert backend.get_task(tid).steps["a"].retry_limit == 1


def test_cancel_step_stops_a_failed_branch_and_the_task_ends_in_error(backend):
    """Given a task whose first step failed for good, when its pending step b is
    cancelled, then b is cancelled (recorded), c never runs, the task ends in error,
    and cancelling b again is refused."""
    log = EventLog()
    chain(backend, log, failing(PermanentError("no")))
    tid = backend.enqueue(TaskRequest(name="chain")).task_id
    backend.run_until_idle()

    view = backend.cancel_step(tid, "b")
    backend.run_until_idle()

    task = backend.get_task(tid)
    assert view.steps["b"].status == "cancelled"
    assert (task.status, task.steps["b"].status, task.steps["c"].status) == (
        "error",
        "cancelled",
        "pending",
    )
    assert log.of("start") == []
    trail = check_history(backend, tid)
    assert trail["b"][-1].reason == "step cancelled"
    with pytest.raises(errors.InvalidStateError):
        backend.cancel_step(tid, "b")
    backend.cancel(tid)
    with pytest.raises(errors.InvalidStateError, match="cancelled"):
        backend.cancel_step(tid, "c")
