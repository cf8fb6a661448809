"""Reading a task's events (`tasker_events`) for the engine and the views."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasker.core.events import Event
from tasker.store import schema as m

E = m.events


def read_events(conn: Connection, task_id: int) -> list[Event]:
    """Every event of a task, in signal order (consumed ones say by which step)."""
    rows = conn.execute(
        sa.select(E.c.event_id, E.c.name, E.c.payload, E.c.consumed_by)
        .where(E.c.task_id == task_id)
        .order_by(E.c.event_id)
    ).all()
    return [
        Event(
            int(r.event_id),
            r.name,
            r.payload,
            None if r.consumed_by is None else int(r.consumed_by),
        )
        for r in rows
    ]


def consumers(conn: Connection, task_ids: Sequence[int]) -> set[int]:
    """The step ids, among these tasks' steps, that have consumed an event."""
    if not task_ids:
        return set()
    rows = conn.execute(
        sa.select(E.c.consumed_by).where(E.c.task_id.in_(task_ids), E.c.consumed_by.is_not(None))
    ).scalars()
    return {int(i) for i in rows}
