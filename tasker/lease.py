"""Claiming a task, and the lease-fenced writes the engine makes while it holds it.

A lease is (owner, epoch, expiry) on the task row. Claiming bumps the epoch. The
engine then decides in memory what a transaction changes (steps' new states, their
transitions, annotations, the task's next state) and hands it to `apply` as a
`TaskWrite`. The write first updates the task row only while the epoch and owner
are still ours and the steering revision is the one the engine planned with; the
rest of the write happens only if that matched. On PostgreSQL claim and write are
one statement each (`tasker.pgsql`); on SQLite a few statements in a
`BEGIN IMMEDIATE` transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasker import models as m
from tasker import pgsql
from tasker.audit import StepChange, step_change_rows, task_change_row
from tasker.clock import maybe_utc
from tasker.errors import LeaseLostError
from tasker.states import TASK_LIVE, Status
from tasker.views import StepView

T, S = m.tasks, m.workflow_steps
_IN_PROGRESS = Status.IN_PROGRESS.value


@dataclass(frozen=True)
class Lease:
    """Proof that this process owns a task until the epoch moves on."""

    task_id: int
    owner: str
    epoch: int


class StaleRevisionError(Exception):
    """The lease is ours but a steering call changed the task: re-read it, plan again."""


@dataclass(frozen=True)
class Claimed:
    """A claimed task: its lease, its row, and its step rows (`STEP_COLUMNS`) in order."""

    lease: Lease
    task: dict[str, Any]
    steps: list[Any]


@dataclass(frozen=True)
class Finish:
    """How a write ends the pass: `to_status` complete or error, or None to release.

    A released task stays live and is due again at `wake_at` (announced by an outbox row).
    """

    to_status: Status | None
    wake_at: datetime | None
    reason: str


@dataclass(frozen=True)
class TaskWrite:
    """One lease-fenced transaction, decided by the engine before it is written."""

    lease: Lease
    revision: int  # the steering revision the engine planned with
    now: datetime
    lease_until: datetime
    steps: Sequence[StepView] = ()  # the new state of every step this write changes
    step_changes: Sequence[StepChange] = ()
    annotations: Sequence[tuple[int, Any]] = ()  # (annotation_type_id, annotation)
    finish: Finish | None = None

    def task_values(self) -> dict[str, Any]:
        """The task row's new lease and scheduling values (see `Finish`)."""
        f = self.finish
        if f is None:
            return {
                "status": _IN_PROGRESS,
                "new_owner": self.lease.owner,
                "expires": self.lease_until,
                "set_next": False,
                "next_run_at": None,
                "completed_at": None,
            }
        done = f.to_status is not None
        return {
            "status": f.to_status.value if f.to_status is not None else _IN_PROGRESS,
            "new_owner": None,
            "expires": None,
            "set_next": True,
            "next_run_at": None if done else f.wake_at,
            "completed_at": self.now if f.to_status is Status.COMPLETE else None,
        }

    def deliver_at(self) -> datetime | None:
        """When the message announcing a released task is due (its outbox row), else None."""
        f = self.finish
        return f.wake_at if f is not None and f.to_status is None else None


#: The task fields a claim reads: what the engine and the handlers' `task` need.
CLAIM_FIELDS = (
    "task_id",
    "named_task_id",
    "context",
    "tags",
    "initiator",
    "source_system",
    "reason",
    "requested_at",
    "revision",
    "tx_seq",
    "lease_epoch",
)

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
) -> Claimed | None:
    """Take the lease of a task that is live, due and not leased by anyone alive.

    Run it in `Database.write(one_statement=True)`. The messages that announced the
    task count as delivered (their outbox rows go); the first claim records the task's
    pending -> in_progress transition.

    Returns:
        The claim, or None when the task is finished, cancelled, not due yet or
        leased: the message is then a no-op.
    """
    expires = now + timedelta(seconds=lease_seconds)
    if conn.dialect.name == "postgresql":
        got = pgsql.claim(conn, CLAIM_FIELDS, task_id, owner, now, expires)
        if got is None:
            return None
        task, steps = got
    else:
        row = conn.execute(
            _CLAIM, {"p_task_id": task_id, "p_owner": owner, "p_now": now, "p_expires": expires}
        ).first()
        if row is None:
            return None
        task = dict(row._mapping)
        if task["lease_epoch"] == 1:
            change = task_change_row(task_id, Status.PENDING, Status.IN_PROGRESS, "claimed", now)
            conn.execute(T_TRANSITIONS, {**change, "tx_seq": task["tx_seq"]})
        conn.execute(
            sa.delete(m.outbox).where(m.outbox.c.task_id == task_id, m.outbox.c.deliver_at <= now)
        )
        steps = list(conn.execute(select_steps([task_id])).all())
    return Claimed(Lease(task_id, owner, int(task["lease_epoch"])), task, steps)


def apply(conn: Connection, w: TaskWrite) -> int:
    """Write a `TaskWrite` if the lease and revision are still as planned.

    Run it in `Database.write(one_statement=True)`.

    Returns:
        The number this transaction has in the task's order (`tx_seq`).

    Raises:
        LeaseLostError: the task was cancelled or finished, or another worker claimed it.
        StaleRevisionError: a steering call changed the task since it was read.
        InvalidTransitionError: a change the state machine does not allow (a bug).
    """
    step_rows = step_change_rows(w.lease.task_id, w.step_changes, w.now)
    task_row = None
    if w.finish is not None and w.finish.to_status is not None:
        task_row = task_change_row(
            w.lease.task_id, Status.IN_PROGRESS, w.finish.to_status, w.finish.reason, w.now
        )
    if conn.dialect.name == "postgresql":
        seq, current = pgsql.apply(conn, w, step_rows, task_row)
    else:
        seq, current = _apply_core(conn, w, step_rows, task_row)
    if seq is not None:
        return seq
    lease = w.lease
    if current is not None and (
        current["lease_epoch"] == lease.epoch
        and current["lease_owner"] == lease.owner
        and current["status"] == _IN_PROGRESS
    ):
        raise StaleRevisionError(f"task {lease.task_id}: changed by a steering call")
    raise LeaseLostError(f"task {lease.task_id}: lease epoch {lease.epoch} is no longer ours")


# -- SQLite: a few prebuilt statements in one transaction ---------------------------

_When, _Json = m.When, m.Json


def _p(name: str, type_: Any = None) -> sa.BindParameter[Any]:
    return sa.bindparam(f"p_{name}", type_=type_)


_CLAIM = (
    sa.update(T)
    .where(
        T.c.task_id == _p("task_id"),
        T.c.status.in_([s.value for s in TASK_LIVE]),
        T.c.next_run_at <= _p("now", _When),
        sa.or_(T.c.lease_owner.is_(None), T.c.lease_expires_at < _p("now", _When)),
    )
    .values(
        status=_IN_PROGRESS,
        lease_owner=_p("owner"),
        lease_epoch=T.c.lease_epoch + 1,
        lease_expires_at=_p("expires", _When),
        tx_seq=T.c.tx_seq + 1,
        updated_at=_p("now", _When),
    )
    .returning(*(T.c[n] for n in CLAIM_FIELDS))
)

_FENCE = (
    sa.update(T)
    .where(
        T.c.task_id == _p("task_id"),
        T.c.lease_epoch == _p("epoch"),
        T.c.lease_owner == _p("owner"),
        T.c.status == _IN_PROGRESS,
        T.c.revision == _p("revision"),
    )
    .values(
        tx_seq=T.c.tx_seq + 1,
        updated_at=_p("now", _When),
        status=_p("status"),
        lease_owner=_p("new_owner"),
        lease_expires_at=_p("expires", _When),
        next_run_at=sa.case(
            (_p("set_next", sa.Boolean) == sa.true(), _p("next_run_at", _When)),
            else_=T.c.next_run_at,
        ),
        completed_at=sa.func.coalesce(_p("completed_at", _When), T.c.completed_at),
    )
    .returning(T.c.tx_seq)
)

_STEPS = (
    sa.update(S)
    .where(S.c.workflow_step_id == _p("id"))
    .values(
        status=_p("status"),
        attempts=_p("attempts"),
        results=_p("results", _Json),
        error=_p("error", _Json),
        last_attempted_at=_p("last_attempted_at", _When),
        next_attempt_at=_p("next_attempt_at", _When),
        processed_at=_p("processed_at", _When),
        updated_at=_p("now", _When),
    )
)

T_TRANSITIONS = m.task_transitions.insert()
_STEP_TRANSITIONS = m.step_transitions.insert()
_ANNOTATIONS = m.task_annotations.insert()
_OUTBOX = m.outbox.insert()
_LEASE_OF = sa.select(T.c.lease_epoch, T.c.lease_owner, T.c.status).where(
    T.c.task_id == _p("task_id")
)


def _apply_core(
    conn: Connection,
    w: TaskWrite,
    step_rows: list[dict[str, Any]],
    task_row: dict[str, Any] | None,
) -> tuple[int | None, dict[str, Any] | None]:
    lease, now, task_id = w.lease, w.now, w.lease.task_id
    fence = {
        f"p_{k}": v
        for k, v in (
            ("task_id", task_id),
            ("epoch", lease.epoch),
            ("owner", lease.owner),
            ("revision", w.revision),
            ("now", now),
            *w.task_values().items(),
        )
    }
    row = conn.execute(_FENCE, fence).first()
    if row is None:
        current = conn.execute(_LEASE_OF, {"p_task_id": task_id}).first()
        return None, None if current is None else dict(current._mapping)
    seq = int(row.tx_seq)
    if w.steps:
        conn.execute(
            _STEPS,
            [
                {
                    "p_id": v.workflow_step_id,
                    "p_status": v.status,
                    "p_attempts": v.attempts,
                    "p_results": v.results,
                    "p_error": v.error,
                    "p_last_attempted_at": v.last_attempted_at,
                    "p_next_attempt_at": v.next_attempt_at,
                    "p_processed_at": v.processed_at,
                    "p_now": now,
                }
                for v in w.steps
            ],
        )
    if step_rows:
        conn.execute(_STEP_TRANSITIONS, [{**r, "tx_seq": seq} for r in step_rows])
    if task_row is not None:
        conn.execute(T_TRANSITIONS, {**task_row, "tx_seq": seq})
    if w.annotations:
        conn.execute(
            _ANNOTATIONS,
            [
                {"task_id": task_id, "annotation_type_id": t, "annotation": a, "created_at": now}
                for t, a in w.annotations
            ],
        )
    deliver_at = w.deliver_at()
    if deliver_at is not None:
        conn.execute(_OUTBOX, {"task_id": task_id, "deliver_at": deliver_at, "created_at": now})
    return seq, None
