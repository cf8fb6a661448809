"""Steering calls: cancel a task, resolve a step by hand, retry failed steps, edit a task or step.

Each locks the task row first (so it waits for a running engine transaction),
changes what it must, bumps the task's revision (so a running engine re-reads
its steps) and, when work may resume, writes an outbox row in the same
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasker.control import family
from tasker.core import deadlines, states
from tasker.core.clock import as_utc
from tasker.core.jsonvalue import json_problem
from tasker.core.states import TASK_HALTED, Status
from tasker.errors import (
    InvalidRequestError,
    InvalidStateError,
    InvalidTransitionError,
    StepNotFoundError,
    TaskNotFoundError,
)
from tasker.store import items
from tasker.store import schema as m
from tasker.store.audit import StepChange, write_step_changes, write_task_change
from tasker.store.db import Database
from tasker.store.steps import read_steps

T, S = m.tasks, m.workflow_steps
_UNFINISHED = (Status.PENDING.value, Status.IN_PROGRESS.value, Status.ERROR.value)


def _lock(conn: Connection, task_id: int) -> Status:
    """Lock the task row (opening a new entry in its audit order) and read its status."""
    row = conn.execute(
        sa.update(T)
        .where(T.c.task_id == task_id)
        .values(tx_seq=T.c.tx_seq + 1)
        .returning(T.c.status)
    ).first()
    if row is None:
        raise TaskNotFoundError(f"no task has id {task_id}")
    return Status(row.status)


def _steps(conn: Connection, task_id: int) -> list[Any]:
    return read_steps(conn, [task_id])


def _timed_out(conn: Connection, task_id: int) -> Any:
    """The task's creation, deadline and error if it ended by timing out, else None."""
    row = conn.execute(
        sa.select(T.c.created_at, T.c.deadline_at, T.c.error).where(T.c.task_id == task_id)
    ).one()
    return row if row.deadline_at is not None and deadlines.is_timeout(row.error) else None


def _resume(conn: Connection, task_id: int, status: Status, reason: str, now: datetime) -> None:
    """Make the task due now and announce it; a halted task goes back to in_progress.

    A task that timed out goes on with a new deadline, a full timeout from now
    (`tasker.core.deadlines.extended`): the person who lets it go on gives it that time.
    """
    values: dict[str, Any] = {"next_run_at": now, "revision": T.c.revision + 1, "updated_at": now}
    if status is Status.ERROR:
        late = _timed_out(conn, task_id)
        if late is not None:
            values["deadline_at"] = deadlines.extended(
                as_utc(late.created_at), as_utc(late.deadline_at), now
            )
        values["error"] = None
    if status in TASK_HALTED:
        write_task_change(conn, task_id, status, Status.IN_PROGRESS, reason, now)
        values["status"] = Status.IN_PROGRESS.value
    conn.execute(sa.update(T).where(T.c.task_id == task_id).values(values))
    conn.execute(m.outbox.insert(), {"task_id": task_id, "deliver_at": now, "created_at": now})


def cancel(
    db: Database,
    task_id: int,
    now: datetime,
    reason: str = "cancelled",
    woken: list[int] | None = None,
) -> bool:
    """Cancel a task and its unfinished steps; nothing new starts.

    Its children that have not ended for good are cancelled too (and theirs); a child
    cancelled by itself wakes the parent step waiting for it.

    Args:
        woken: the ids of other tasks to message after the commit are appended here.

    Returns:
        True if it was cancelled now, False if it already was.

    Raises:
        TaskNotFoundError: no task has that id.
        InvalidTransitionError: the task is already finished.
    """
    with db.write() as conn:
        done = _cancel(conn, task_id, now, reason)
        if done:
            family.nudge_parent(conn, task_id, now, [] if woken is None else woken)
    return done


def _cancel(conn: Connection, task_id: int, now: datetime, reason: str) -> bool:
    """`cancel` in `conn`'s transaction, cascading to the children."""
    status = _lock(conn, task_id)
    if status is Status.CANCELLED:
        return False
    write_task_change(conn, task_id, status, Status.CANCELLED, reason, now)
    conn.execute(
        sa.update(T)
        .where(T.c.task_id == task_id)
        .values(
            status=Status.CANCELLED.value,
            completed_at=now,  # final: retention counts from here
            next_run_at=None,
            error=None,
            # `on_finish` is owed (if the handler has one): `Tasker.cancel` runs it after
            # this commits, else the sweeper does (`tasker.control.finishing`).
            finish_due_at=now,
            lease_owner=None,
            lease_expires_at=None,
            revision=T.c.revision + 1,
            updated_at=now,
        )
    )
    open_steps = [r for r in _steps(conn, task_id) if r.status in _UNFINISHED]
    if open_steps:
        conn.execute(
            sa.update(S)
            .where(S.c.workflow_step_id.in_([r.workflow_step_id for r in open_steps]))
            .values(status=Status.CANCELLED.value, next_attempt_at=None, updated_at=now)
        )
        _record_steps(conn, task_id, open_steps, Status.CANCELLED, reason, now)
    for child in family.children(conn, task_id, family.NOT_FINAL):
        _cancel(conn, child, now, f"parent task {task_id} cancelled")
    return True


def resolve_step(
    db: Database, task_id: int, step_name: str, results: dict[str, Any] | None, now: datetime
) -> None:
    """Mark a pending or failed step `resolved_manually`, so its dependents may run.

    Raises:
        TaskNotFoundError: no task has that id.
        StepNotFoundError: the task has no such step.
        InvalidTransitionError: the task is finished, or the step is running or done.
        InvalidRequestError: `results` is not a JSON object.
    """
    if results is not None and (not isinstance(results, dict) or json_problem(results)):
        raise InvalidRequestError(f"results must be a JSON object or None, got {results!r}")
    with db.write() as conn:
        status = _lock(conn, task_id)
        if status in (Status.COMPLETE, Status.CANCELLED, Status.RESOLVED_MANUALLY):
            raise InvalidTransitionError(f"task {task_id} is {status}; nothing to resolve")
        step = next((r for r in _steps(conn, task_id) if r.name == step_name), None)
        if step is None:
            raise StepNotFoundError(f"task {task_id} has no step {step_name!r}")
        _record_steps(conn, task_id, [step], Status.RESOLVED_MANUALLY, "resolved manually", now)
        conn.execute(
            sa.update(S)
            .where(S.c.workflow_step_id == step.workflow_step_id)
            .values(
                status=Status.RESOLVED_MANUALLY.value,
                results=results,
                next_attempt_at=None,
                processed_at=now,
                updated_at=now,
            )
        )
        _resume(conn, task_id, status, f"step {step_name!r} resolved manually", now)


def _fresh_budget(conn: Connection, task_id: int, reason: str, now: datetime) -> list[str]:
    """Give every step of the task in final error a fresh attempt budget, due at once.

    The budget is fresh for reattempts too (`max_reattempts` counts again from 0).

    Returns:
        The names of those steps.
    """
    failed = [
        r
        for r in _steps(conn, task_id)
        if r.status == Status.ERROR.value and r.next_attempt_at is None
    ]
    if failed:
        conn.execute(
            sa.update(S)
            .where(S.c.workflow_step_id.in_([r.workflow_step_id for r in failed]))
            .values(
                status=Status.PENDING.value,
                attempts=0,
                reattempts=0,
                next_attempt_at=None,
                processed_at=None,
                updated_at=now,
            )
        )
        _record_steps(conn, task_id, failed, Status.PENDING, reason, now)
        items.retry_failed(conn, [r.workflow_step_id for r in failed], now)  # only those run
    return [r.name for r in failed]


def resume(db: Database, task_id: int, now: datetime) -> list[str]:
    """Let a paused task go on; its steps in final error get a fresh attempt budget.

    Returns:
        The names of the steps given a fresh budget.

    Raises:
        TaskNotFoundError: no task has that id.
        InvalidStateError: the task is not paused (nothing is changed).
    """
    with db.write() as conn:
        status = _lock(conn, task_id)
        if status is not Status.PAUSED:
            raise InvalidStateError(f"task {task_id} is {status}, not paused: nothing to resume")
        names = _fresh_budget(conn, task_id, "resumed: fresh attempt budget", now)
        _resume(conn, task_id, status, "resumed", now)
    return names


def retry(db: Database, task_id: int, now: datetime, woken: list[int] | None = None) -> list[str]:
    """Give every step in final error a fresh attempt budget, due at once.

    A paused task goes on (as with `resume`), also when no step is in final error; so
    does a task that timed out, with a new deadline a full timeout from now. Its
    children in error are retried too (and theirs), before it.

    Args:
        woken: the ids of the children retried (to message after the commit) are
            appended here.

    Returns:
        The names of the steps that will be retried.

    Raises:
        TaskNotFoundError: no task has that id.
        InvalidTransitionError: the task is finished, or (not paused nor timed out) no
            step is in final error.
    """
    with db.write() as conn:
        status = _lock(conn, task_id)
        if status in (Status.COMPLETE, Status.CANCELLED, Status.RESOLVED_MANUALLY):
            raise InvalidTransitionError(f"task {task_id} is {status}; nothing to retry")
        _retry_children(conn, task_id, now, [] if woken is None else woken)
        names = _fresh_budget(conn, task_id, "retry requested: fresh attempt budget", now)
        # A paused task goes on all the same, and so does one that timed out.
        goes_on = status is Status.PAUSED or (
            status is Status.ERROR and _timed_out(conn, task_id) is not None
        )
        if not names and not goes_on:
            raise InvalidTransitionError(f"task {task_id} has no step in final error to retry")
        _resume(conn, task_id, status, "retry requested", now)
    return names


def _retry_children(conn: Connection, task_id: int, now: datetime, woken: list[int]) -> None:
    """Retry the task's children in error (and theirs), in `conn`'s transaction."""
    for child in family.children(conn, task_id, (Status.ERROR.value,)):
        status = _lock(conn, child)
        _retry_children(conn, child, now, woken)
        reason = f"parent task {task_id} retried: fresh attempt budget"
        _fresh_budget(conn, child, reason, now)
        _resume(conn, child, status, f"parent task {task_id} retried", now)
        woken.append(child)


def _record_steps(
    conn: Connection,
    task_id: int,
    rows: Sequence[Any],
    to_status: Status,
    reason: str,
    now: datetime,
) -> None:
    """Record the transitions of step rows (from `_steps`) to `to_status`."""
    write_step_changes(
        conn,
        task_id,
        (
            StepChange(r.workflow_step_id, r.name, Status(r.status), to_status, r.attempts, reason)
            for r in rows
        ),
        now,
    )


def resolve_task(
    db: Database, task_id: int, reason: str, now: datetime, woken: list[int] | None = None
) -> bool:
    """Declare a task done by hand: its unfinished steps and the task become `resolved_manually`.

    For a task that is `pending` (not run yet) or in `error`: a person did its remaining
    work elsewhere, or decided it need not be done. Steps that are `pending` or in
    `error` become `resolved_manually` (a failed step keeps its error); the task is final,
    with `completed_at` now, and nothing of it runs again. Every change is recorded with
    `reason`.

    Returns:
        True if it was resolved now, False if it already was.

    Raises:
        InvalidRequestError: `reason` is not a string of at most 255 characters.
        TaskNotFoundError: no task has that id.
        InvalidTransitionError: the task is complete or cancelled, or in progress (the
            engine still works on it: cancel it, or resolve or retry its steps).
    """
    if not isinstance(reason, str) or len(reason) > 255:
        raise InvalidRequestError(f"reason must be a string of at most 255 characters: {reason!r}")
    with db.write() as conn:
        status = _lock(conn, task_id)
        if status is Status.RESOLVED_MANUALLY:
            return False
        if not states.can_task(status, Status.RESOLVED_MANUALLY):
            raise InvalidTransitionError(f"task {task_id} is {status}; it cannot be resolved")
        open_steps = [r for r in _steps(conn, task_id) if r.status in _UNFINISHED]
        # Checks each step's change first: none is running in a pending or failed task.
        _record_steps(conn, task_id, open_steps, Status.RESOLVED_MANUALLY, reason, now)
        if open_steps:
            conn.execute(
                sa.update(S)
                .where(S.c.workflow_step_id.in_([r.workflow_step_id for r in open_steps]))
                .values(
                    status=Status.RESOLVED_MANUALLY.value,
                    next_attempt_at=None,
                    processed_at=now,
                    updated_at=now,
                )
            )
        write_task_change(conn, task_id, status, Status.RESOLVED_MANUALLY, reason, now)
        conn.execute(
            sa.update(T)
            .where(T.c.task_id == task_id)
            .values(
                status=Status.RESOLVED_MANUALLY.value,
                completed_at=now,
                next_run_at=None,
                lease_owner=None,
                lease_expires_at=None,
                revision=T.c.revision + 1,
                updated_at=now,
            )
        )
        family.nudge_parent(conn, task_id, now, [] if woken is None else woken)
    return True


#: A step in one of these has finished: `update_step` and `cancel_step` refuse it.
_STEP_DONE = frozenset(
    {
        Status.COMPLETE.value,
        Status.SKIPPED.value,
        Status.RESOLVED_MANUALLY.value,
        Status.CANCELLED.value,
    }
)


def check_task_fields(reason: Any, tags: Any) -> None:
    """Check the `reason` and `tags` that `update_task` would store.

    Raises:
        InvalidRequestError: `reason` is not a string of 1 to 255 characters, or `tags`
            is not a list of strings, or either holds a character no column can store.
    """
    if reason is not None and (not isinstance(reason, str) or not 0 < len(reason) <= 255):
        raise InvalidRequestError(f"reason must be a string of 1 to 255 characters: {reason!r}")
    if tags is not None and (
        not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)
    ):
        raise InvalidRequestError(f"tags must be a list of strings, got {tags!r}")
    problem = json_problem([reason, tags])
    if problem:  # NUL or a lone surrogate: no database column can hold it
        raise InvalidRequestError(f"reason or tags cannot be stored: {problem}")


def update_task(
    db: Database, task_id: int, reason: str | None, tags: list[str] | None, now: datetime
) -> None:
    """Change a task's `reason` and/or `tags` (what it is for; nothing it runs on).

    Raises:
        InvalidRequestError: a bad `reason` or `tags` (see `check_task_fields`).
        TaskNotFoundError: no task has that id.
    """
    check_task_fields(reason, tags)
    values: dict[str, Any] = {"updated_at": now}
    if reason is not None:
        values["reason"] = reason
    if tags is not None:
        values["tags"] = list(tags)
    with db.write() as conn:
        _lock(conn, task_id)
        conn.execute(sa.update(T).where(T.c.task_id == task_id).values(values))


def _open_step(conn: Connection, task_id: int, step_name: str, action: str) -> tuple[Status, Any]:
    """Lock the task and find a step of it that has not finished, for `action`.

    Returns:
        The task's status and the step's row.

    Raises:
        TaskNotFoundError: no task has that id.
        StepNotFoundError: the task has no such step.
        InvalidStateError: the task is finished, or the step is.
    """
    status = _lock(conn, task_id)
    step = next((r for r in _steps(conn, task_id) if r.name == step_name), None)
    if step is None:
        raise StepNotFoundError(f"task {task_id} has no step {step_name!r}")
    if status in (Status.COMPLETE, Status.CANCELLED, Status.RESOLVED_MANUALLY):
        raise InvalidStateError(f"task {task_id} is {status}; cannot {action} step {step_name!r}")
    if step.status in _STEP_DONE:
        raise InvalidStateError(
            f"step {step_name!r} of task {task_id} is {step.status}; cannot {action} it"
        )
    return status, step


def update_step(
    db: Database,
    task_id: int,
    step_name: str,
    retry_limit: int | None,
    inputs: dict[str, Any] | None,
    now: datetime,
) -> None:
    """Change the attempt budget and/or the inputs of a step that has not finished.

    The next attempt uses them; a running attempt keeps the inputs it started with.
    The task's revision is bumped so that a running engine pass re-reads the step.

    Raises:
        InvalidRequestError: `retry_limit` is not an integer of at least 1, or `inputs`
            is not a JSON object.
        TaskNotFoundError: no task has that id.
        StepNotFoundError: the task has no such step.
        InvalidStateError: the task is finished, or the step is (complete, skipped,
            resolved or cancelled).
    """
    if retry_limit is not None and (
        isinstance(retry_limit, bool) or not isinstance(retry_limit, int) or retry_limit < 1
    ):
        raise InvalidRequestError(f"retry_limit must be an integer >= 1, got {retry_limit!r}")
    if inputs is not None and (not isinstance(inputs, dict) or json_problem(inputs)):
        raise InvalidRequestError(f"inputs must be a JSON object, got {inputs!r}")
    values: dict[str, Any] = {"updated_at": now}
    if retry_limit is not None:
        values["retry_limit"] = retry_limit
    if inputs is not None:
        values["inputs"] = inputs
    with db.write() as conn:
        _, step = _open_step(conn, task_id, step_name, "change")
        conn.execute(
            sa.update(S).where(S.c.workflow_step_id == step.workflow_step_id).values(values)
        )
        conn.execute(
            sa.update(T)
            .where(T.c.task_id == task_id)
            .values(revision=T.c.revision + 1, updated_at=now)
        )


def cancel_step(db: Database, task_id: int, step_name: str, now: datetime) -> None:
    """Cancel one pending or failed step: it never runs, and its dependents cannot.

    The task goes on with whatever else can run, then ends in `error` if the cancelled
    step kept something from running (resolve those steps or the task by hand). A paused
    task stays paused.

    Raises:
        TaskNotFoundError: no task has that id.
        StepNotFoundError: the task has no such step.
        InvalidStateError: the task is finished, the step is finished, or it is running
            (cancel the task to stop it).
    """
    with db.write() as conn:
        status, step = _open_step(conn, task_id, step_name, "cancel")
        if step.status == Status.IN_PROGRESS.value:
            raise InvalidStateError(
                f"step {step_name!r} of task {task_id} is running; cancel the task to stop it"
            )
        _record_steps(conn, task_id, [step], Status.CANCELLED, "step cancelled", now)
        conn.execute(
            sa.update(S)
            .where(S.c.workflow_step_id == step.workflow_step_id)
            .values(status=Status.CANCELLED.value, next_attempt_at=None, updated_at=now)
        )
        if status is Status.PAUSED:  # it stays paused: resume, retry or resolve_step go on
            conn.execute(
                sa.update(T)
                .where(T.c.task_id == task_id)
                .values(revision=T.c.revision + 1, updated_at=now)
            )
        else:
            _resume(conn, task_id, status, f"step {step_name!r} cancelled", now)
