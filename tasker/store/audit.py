"""The audit trail: every status change is checked and written as a transition row."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasker.core import states
from tasker.core.states import Status
from tasker.store import schema as m


@dataclass(frozen=True)
class StepChange:
    """One step's status change."""

    workflow_step_id: int
    name: str
    from_status: Status | None
    to_status: Status
    attempt: int
    reason: str
    details: dict[str, Any] | None = None


def _current_seq(task_id: int) -> sa.ScalarSelect[int]:
    """The task's transaction number: it orders the audit trail exactly.

    Whoever locked the task row in this transaction (claim, fence, steering) bumped it.
    """
    return sa.select(m.tasks.c.tx_seq).where(m.tasks.c.task_id == task_id).scalar_subquery()


def step_change_rows(
    task_id: int, changes: Iterable[StepChange], now: datetime
) -> list[dict[str, Any]]:
    """Check step status changes and return their transition rows (without `tx_seq`).

    Raises:
        InvalidTransitionError: a change the state machine does not allow.
    """
    rows = []
    for c in changes:
        states.check_step(c.name, c.from_status, c.to_status)
        rows.append(
            {
                "workflow_step_id": c.workflow_step_id,
                "task_id": task_id,
                "from_status": None if c.from_status is None else c.from_status.value,
                "to_status": c.to_status.value,
                "attempt": c.attempt,
                "reason": c.reason[:255],
                "details": c.details,
                "created_at": now,
            }
        )
    return rows


def task_change_row(
    task_id: int, from_status: Status | None, to_status: Status, reason: str, now: datetime
) -> dict[str, Any]:
    """Check a task status change and return its transition row (without `tx_seq`).

    Raises:
        InvalidTransitionError: a change the state machine does not allow.
    """
    states.check_task(task_id, from_status, to_status)
    return {
        "task_id": task_id,
        "from_status": None if from_status is None else from_status.value,
        "to_status": to_status.value,
        "reason": reason[:255],
        "created_at": now,
    }


def write_step_changes(
    conn: Connection, task_id: int, changes: Iterable[StepChange], now: datetime
) -> None:
    """Check and record step status changes.

    Raises:
        InvalidTransitionError: a change the state machine does not allow.
    """
    rows = step_change_rows(task_id, changes, now)
    if rows:
        conn.execute(m.step_transitions.insert().values(tx_seq=_current_seq(task_id)), rows)


def write_task_change(
    conn: Connection,
    task_id: int,
    from_status: Status | None,
    to_status: Status,
    reason: str,
    now: datetime,
) -> None:
    """Check and record a task status change.

    Raises:
        InvalidTransitionError: a change the state machine does not allow.
    """
    row = task_change_row(task_id, from_status, to_status, reason, now)
    conn.execute(m.task_transitions.insert().values(tx_seq=_current_seq(task_id)), row)
