"""Steering across sub-tasks: cancel and retry reach the children; an ended child wakes.

A parent's cancel and retry reach its children, and a child a person ends wakes the
parent step waiting for it.

Everything here runs inside the steering call's transaction (`conn`), on rows it locks
the same way (`tasker.control.steering`); the ids of tasks that must be messaged after
the commit are appended to `woken`.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasker.core.states import Status
from tasker.store import schema as m

T = m.tasks
#: A child in one of these has not ended for good: cancelling its parent cancels it.
NOT_FINAL = (
    Status.PENDING.value,
    Status.IN_PROGRESS.value,
    Status.PAUSED.value,
    Status.ERROR.value,
)


def children(conn: Connection, task_id: int, statuses: Collection[str]) -> list[int]:
    """The ids of the task's children in one of `statuses`, in spawn order."""
    return [
        int(i)
        for i in conn.execute(
            sa.select(T.c.task_id)
            .where(T.c.parent_task_id == task_id, T.c.status.in_(list(statuses)))
            .order_by(T.c.task_id)
        ).scalars()
    ]


def nudge_parent(conn: Connection, task_id: int, now: datetime, woken: list[int]) -> None:
    """Wake the parent whose step waits for this task (which a person just ended).

    Only an outbox row for the parent (its message): the parent's own pass reads its
    children and decides.
    """
    row = conn.execute(
        sa.select(T.c.parent_task_id, T.c.parent_waits).where(T.c.task_id == task_id)
    ).first()
    if row is None or row.parent_task_id is None or not row.parent_waits:
        return
    parent = int(row.parent_task_id)
    conn.execute(m.outbox.insert(), {"task_id": parent, "deliver_at": now, "created_at": now})
    woken.append(parent)
