"""Claiming a task, and the lease-fenced writes the engine makes while it holds it.

A lease is (owner, epoch, expiry) on the task row. Claiming bumps the epoch;
every later write first runs `fence`, an UPDATE that matches only while the
epoch and owner are still ours (and renews the expiry). On PostgreSQL that
UPDATE also locks the task row for the rest of the transaction, so steering
calls and other claimers wait for it; on SQLite `BEGIN IMMEDIATE` does the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasker import models as m
from tasker.audit import write_task_change
from tasker.clock import maybe_utc
from tasker.errors import LeaseLostError
from tasker.states import TASK_LIVE, Status
from tasker.views import StepView

_LIVE = [s.value for s in TASK_LIVE]
T, S = m.tasks, m.workflow_steps


@dataclass(frozen=True)
class Lease:
    """Proof that this process owns a task until the epoch moves on."""

    task_id: int
    owner: str
    epoch: int


STEP_COLUMNS = (
    S.c.workflow_step_id,
    S.c.position,
    S.c.status,
    S.c.attempts,
    S.c.retry_limit,
    S.c.retryable,
    S.c.skippable,
    S.c.inputs,
    S.c.results,
    S.c.error,
    S.c.last_attempted_at,
    S.c.next_attempt_at,
    S.c.processed_at,
    m.named_steps.c.name,
    m.dependent_systems.c.name.label("dependent_system"),
)

_STEP_FROM = S.join(m.named_steps, S.c.named_step_id == m.named_steps.c.named_step_id).join(
    m.dependent_systems,
    m.named_steps.c.dependent_system_id == m.dependent_systems.c.dependent_system_id,
)


def step_view(row: Any, depends_on: Sequence[str]) -> StepView:
    """The view of one step row selected with `STEP_COLUMNS`."""
    return StepView(
        workflow_step_id=int(row.workflow_step_id),
        name=row.name,
        status=row.status,
        attempts=row.attempts,
        retry_limit=row.retry_limit,
        retryable=row.retryable,
        skippable=row.skippable,
        depends_on=tuple(depends_on),
        dependent_system=row.dependent_system,
        inputs=row.inputs,
        results=row.results,
        error=row.error,
        last_attempted_at=maybe_utc(row.last_attempted_at),
        next_attempt_at=maybe_utc(row.next_attempt_at),
        processed_at=maybe_utc(row.processed_at),
    )


def select_steps(task_ids: Sequence[int], columns: Sequence[Any] = STEP_COLUMNS) -> sa.Select[Any]:
    """The steps of some tasks, with their names and dependent systems, in order."""
    return (
        sa.select(S.c.task_id, *columns)
        .select_from(_STEP_FROM)
        .where(S.c.task_id.in_(task_ids))
        .order_by(S.c.task_id, S.c.position)
    )


def claim(
    conn: Connection, task_id: int, owner: str, now: datetime, lease_seconds: float
) -> tuple[Lease, dict[str, Any]] | None:
    """Take the lease of a task that is live, due and not leased by anyone alive.

    One UPDATE ... RETURNING: a task that is not claimable costs one statement.

    Returns:
        The lease and the task row, or None when the task is finished, cancelled,
        not due yet or leased: the message is then a no-op.
    """
    claimable = sa.and_(
        T.c.task_id == task_id,
        T.c.status.in_(_LIVE),
        T.c.next_run_at <= now,
        sa.or_(T.c.lease_owner.is_(None), T.c.lease_expires_at < now),
    )
    row = conn.execute(
        sa.update(T)
        .where(claimable)
        .values(
            status=Status.IN_PROGRESS.value,
            lease_owner=owner,
            lease_epoch=T.c.lease_epoch + 1,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            tx_seq=T.c.tx_seq + 1,
            updated_at=now,
        )
        .returning(*T.c)
    ).first()
    if row is None:
        return None
    # Only the first claim finds the task pending (later ones find it in_progress).
    if row.lease_epoch == 1:
        write_task_change(conn, task_id, Status.PENDING, Status.IN_PROGRESS, "claimed", now)
    # The messages that announced this task have now been delivered.
    conn.execute(
        sa.delete(m.outbox).where(m.outbox.c.task_id == task_id, m.outbox.c.deliver_at <= now)
    )
    return Lease(task_id, owner, int(row.lease_epoch)), dict(row._mapping)


def fence(conn: Connection, lease: Lease, now: datetime, lease_seconds: float) -> tuple[int, int]:
    """Check the lease is still ours, renew it, and lock the task row.

    Returns:
        The task's steering revision (it changes when a steering call touched it) and
        the number this transaction now has in the task's order (`tx_seq`).

    Raises:
        LeaseLostError: the task was cancelled, or another worker claimed it.
    """
    revision = conn.execute(
        sa.update(T)
        .where(
            T.c.task_id == lease.task_id,
            T.c.lease_epoch == lease.epoch,
            T.c.lease_owner == lease.owner,
            T.c.status == Status.IN_PROGRESS.value,
        )
        .values(
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            tx_seq=T.c.tx_seq + 1,
            updated_at=now,
        )
        .returning(T.c.revision, T.c.tx_seq)
    ).first()
    if revision is None:
        raise LeaseLostError(f"task {lease.task_id}: lease epoch {lease.epoch} is no longer ours")
    return int(revision.revision), int(revision.tx_seq)


def start_steps(conn: Connection, step_ids: Sequence[int], now: datetime) -> None:
    """Mark steps `in_progress`, counting the attempt before it runs.

    Counting first means a worker that dies mid-step still used an attempt.
    The caller records the transitions.
    """
    if not step_ids:
        return
    conn.execute(
        sa.update(S)
        .where(S.c.workflow_step_id.in_(step_ids))
        .values(
            status=Status.IN_PROGRESS.value,
            attempts=S.c.attempts + 1,
            last_attempted_at=now,
            next_attempt_at=None,
            updated_at=now,
        )
    )


def write_outcomes(conn: Connection, outcomes: Sequence[dict[str, Any]], now: datetime) -> None:
    """Store attempt outcomes; the caller records the transitions.

    Each outcome dict has `id`, `status`, `results`, `error`, `next_at` and `done_at`.
    """
    if not outcomes:
        return
    conn.execute(
        sa.update(S)
        .where(S.c.workflow_step_id == sa.bindparam("id"))
        .values(
            status=sa.bindparam("status"),
            results=sa.bindparam("results", type_=m.Json),
            error=sa.bindparam("error", type_=m.Json),
            next_attempt_at=sa.bindparam("next_at", type_=m.When),
            processed_at=sa.bindparam("done_at", type_=m.When),
            updated_at=now,
        )
        .execution_options(synchronize_session=False),
        list(outcomes),
    )


def write_annotations(
    conn: Connection, task_id: int, rows: Sequence[tuple[int, dict[str, Any]]], now: datetime
) -> None:
    """Store annotations given as (annotation_type_id, annotation)."""
    if rows:
        conn.execute(
            m.task_annotations.insert(),
            [
                {"task_id": task_id, "annotation_type_id": t, "annotation": a, "created_at": now}
                for t, a in rows
            ],
        )


def finish(
    conn: Connection,
    lease: Lease,
    to_status: Status | None,
    wake_at: datetime | None,
    now: datetime,
    reason: str,
) -> None:
    """Release the lease, either finishing the task or scheduling its next pass.

    Args:
        to_status: `complete` or `error` to finish; None to keep it live.
        wake_at: for a live task, when it is next due (an outbox row announces it).
    """
    values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
    if to_status is not None:
        values.update(status=to_status.value, next_run_at=None)
        if to_status is Status.COMPLETE:
            values["completed_at"] = now
    else:
        values["next_run_at"] = wake_at
    conn.execute(
        sa.update(T)
        .where(T.c.task_id == lease.task_id, T.c.lease_epoch == lease.epoch)
        .values(values)
    )
    if to_status is not None:
        write_task_change(conn, lease.task_id, Status.IN_PROGRESS, to_status, reason, now)
    elif wake_at is not None:
        conn.execute(
            m.outbox.insert(), {"task_id": lease.task_id, "deliver_at": wake_at, "created_at": now}
        )
