"""Finish callbacks at least once, and the timeouts of paused tasks.

A write that ends a task (`complete`, `error`, `cancelled`) of a handler with `on_finish`
sets the task's `finish_due_at` in the same transaction: a call is owed. The writer
claims it by the time it writes (an engine pass: a lease period on, `lease_until`; a
steering call: now, then `claim` moves it on) and runs it once the write has committed.
Should it die first, the sweeper finds the owed call through a partial index once it is
due and runs it (`run_due`). A call ends by clearing `finish_due_at`, only if it is
still the value it was claimed with (a task that ended again meanwhile owes another
call), and by a history row of the task (a same-status row, `tasker.core.states.is_note`)
saying how it went. What `on_finish` raises is logged and recorded there, never changing
the task's status.

A paused task runs no engine pass, so its timeout is the sweeper's too (`expire_paused`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa

from tasker.core import deadlines
from tasker.core.clock import as_utc
from tasker.core.states import Status
from tasker.definition.registry import HandlerFactory
from tasker.errors import TaskNotFoundError, UnknownTaskError
from tasker.store import queries
from tasker.store import schema as m
from tasker.store.audit import write_task_change
from tasker.store.db import Database
from tasker.store.due import col, tasks_through

log = logging.getLogger("tasker.finishing")
T, TT = m.tasks, m.task_transitions
#: The partial index over paused tasks' deadlines that `expire_paused` reads.
PAUSED_INDEX = "ix_tasker_tasks_paused_deadline_at"


def claim(
    db: Database, now: datetime, hold: float, task_ids: list[int] | None = None, limit: int = 100
) -> list[tuple[int, datetime]]:
    """Claim the owed calls due by `now` (of `task_ids`, or any), for `hold` seconds.

    Returns:
        (task_id, the `finish_due_at` it is claimed with) of each call claimed.
    """
    until = now + timedelta(seconds=hold)
    with db.write() as conn:
        q = sa.select(T.c.task_id).where(T.c.finish_due_at <= now)
        if task_ids is not None:
            q = q.where(T.c.task_id.in_(task_ids))
        due = [int(i) for i in conn.execute(q.order_by(T.c.finish_due_at).limit(limit)).scalars()]
        if not due:
            return []
        taken = conn.execute(
            sa.update(T)
            .where(T.c.task_id.in_(due), T.c.finish_due_at <= now)
            .values(finish_due_at=until)
            .returning(T.c.task_id)
        ).scalars()
        return [(int(i), until) for i in taken]


def run(
    db: Database, factory: HandlerFactory, task_id: int, claimed: datetime, now: datetime
) -> None:
    """Run one claimed call of `on_finish` and record how it went; never raises.

    A task whose handler is not registered here keeps its call owed (another worker may
    know the handler; the sweeper tries again once the claim runs out).
    """
    try:
        view = queries.get_task(db, task_id)
    except TaskNotFoundError:
        return  # purged meanwhile: nothing is owed any more
    try:
        reg = factory.get(view.name, view.version)
    except UnknownTaskError:
        log.warning("task %s: on_finish owed, but %r is not registered here", task_id, view.name)
        return
    if not reg.has_on_finish:
        _done(db, task_id, claimed, None, now)
        return
    try:
        reg.handler.on_finish(view)  # type: ignore[attr-defined]
        outcome = "on_finish called"
    except Exception as exc:  # the user's code: recorded, never changing the status
        log.exception("task %s: on_finish raised", task_id)
        outcome = f"on_finish failed: {type(exc).__qualname__}: {exc}"
    _done(db, task_id, claimed, outcome, now)


def _done(
    db: Database, task_id: int, claimed: datetime, outcome: str | None, now: datetime
) -> None:
    """Clear the owed call (if still the one claimed) and record `outcome` in the history."""
    with db.write() as conn:
        cleared = conn.execute(
            sa.update(T)
            .where(T.c.task_id == task_id, T.c.finish_due_at == claimed)
            .values(finish_due_at=None)
            .returning(T.c.task_id)
        ).first()
        if cleared is None:
            log.info("task %s: ended again while on_finish ran: it is owed again", task_id)
        if outcome is None:
            return
        row = conn.execute(
            sa.update(T)
            .where(T.c.task_id == task_id)
            .values(tx_seq=T.c.tx_seq + 1)
            .returning(T.c.status, T.c.tx_seq)
        ).one()
        conn.execute(
            TT.insert(),
            {
                "task_id": task_id,
                "from_status": row.status,
                "to_status": row.status,
                "reason": outcome[:255],
                "tx_seq": row.tx_seq,
                "created_at": now,
            },
        )


def run_due(db: Database, factory: HandlerFactory, now: datetime, hold: float) -> int:
    """Claim and run the owed calls due by `now` (the sweeper's scan); returns how many ran."""
    owed = claim(db, now, hold)
    for task_id, claimed in owed:
        run(db, factory, task_id, claimed, now)
    return len(owed)


def expire_paused(db: Database, now: datetime, limit: int = 100) -> list[int]:
    """End in `error` the paused tasks whose deadline has passed; returns their ids.

    Each in a short transaction of its own that locks the row and checks it again. The
    call of `on_finish` is owed from `now` (`run_due` runs it).
    """
    with db.read() as conn:
        ids = [
            int(i)
            for i in conn.execute(
                sa.select(col("task_id"))
                .select_from(tasks_through(PAUSED_INDEX, not db.is_postgres))
                .where(sa.text(m.PAUSED_DEADLINE_SQL), col("deadline_at") <= now)
                .order_by(col("deadline_at"))
                .limit(limit)
            ).scalars()
        ]
    expired = []
    for task_id in ids:
        with db.write() as conn:
            row = conn.execute(
                sa.update(T)
                .where(T.c.task_id == task_id, T.c.status == Status.PAUSED.value)
                .values(tx_seq=T.c.tx_seq + 1)
                .returning(T.c.created_at, T.c.deadline_at)
            ).first()
            if row is None or row.deadline_at is None:
                continue
            created, deadline = as_utc(row.created_at), as_utc(row.deadline_at)
            if not deadlines.timed_out(deadline, now):
                continue
            error = deadlines.timeout_error(created, deadline)
            write_task_change(conn, task_id, Status.PAUSED, Status.ERROR, error["message"], now)
            conn.execute(
                sa.update(T)
                .where(T.c.task_id == task_id)
                .values(
                    status=Status.ERROR.value,
                    error=error,
                    next_run_at=None,
                    finish_due_at=now,
                    revision=T.c.revision + 1,
                    updated_at=now,
                )
            )
            expired.append(task_id)
    return expired
