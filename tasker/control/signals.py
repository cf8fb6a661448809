"""`Tasker.signal`: storing an event for a task's `wait_for` steps, and nudging the task."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tasker.control import steering
from tasker.core.jsonvalue import json_problem
from tasker.core.states import TASK_FINAL, TASK_LIVE
from tasker.errors import InvalidRequestError, InvalidStateError
from tasker.store import schema as m
from tasker.store.db import Database

S = m.workflow_steps


def signal(db: Database, task_id: int, name: str, payload: Any, now: datetime) -> bool:
    """Store an event for the task; a live task is made due now (an outbox row announces it).

    It locks the task row first (so it waits for a running engine transaction) and bumps
    its revision, so a running pass reads the events again before its next write. A task
    in `error` or `paused` keeps the event for when it goes on.

    Returns:
        True if the task is live (the caller sends its message), else False.

    Raises:
        TaskNotFoundError: no task has that id.
        InvalidStateError: the task is final (complete, cancelled, resolved manually).
        InvalidRequestError: no step of the task waits for `name`, or the payload is not
            a JSON value. Nothing is stored in any of these cases.
    """
    if not isinstance(name, str) or not name:
        raise InvalidRequestError(f"an event name is a non-empty string, got {name!r}")
    problem = json_problem(payload)
    if problem:
        raise InvalidRequestError(f"the payload of event {name!r} cannot be stored: {problem}")
    with db.write() as conn:
        status = steering._lock(conn, task_id)  # the steering calls' own lock
        if status in TASK_FINAL:
            raise InvalidStateError(f"task {task_id} is {status}: it takes no more events")
        names = set(
            conn.execute(
                sa.select(S.c.wait_for).where(S.c.task_id == task_id, S.c.wait_for.is_not(None))
            ).scalars()
        )
        if name not in names:
            waited = sorted(names) or "none"
            raise InvalidRequestError(
                f"no step of task {task_id} waits for event {name!r} (its events: {waited})"
            )
        conn.execute(
            m.events.insert(),
            {"task_id": task_id, "name": name, "payload": payload, "created_at": now},
        )
        live = status in TASK_LIVE
        if live:
            steering._resume(conn, task_id, status, f"event {name!r} signalled", now)
        else:
            conn.execute(
                sa.update(m.tasks)
                .where(m.tasks.c.task_id == task_id)
                .values(revision=m.tasks.c.revision + 1, updated_at=now)
            )
    return live
