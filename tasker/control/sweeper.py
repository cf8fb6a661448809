"""The sweeper (the in-time scheduler): re-sends what is due or abandoned.

The database is the source of truth, so a lost message, a lost delay or a dead
worker never strands a task: each sweep finds
- outbox rows still there a grace period after they were due (the process that
  wrote them died before sending, or the claim that fulfils them never came), and
- live tasks that are due and not leased, or whose lease expired, and that no
  sweep has re-sent within `lease_seconds` (a wiped queue, a killed worker),
and sends a message for each. On PostgreSQL an advisory lock lets one sweeper
at a time do this, however many workers run one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasker.core.states import TASK_LIVE
from tasker.store import schema as m
from tasker.store.db import Database

log = logging.getLogger("tasker.sweeper")

_LOCK_KEY = 0x7A5C3E  # the advisory lock that elects one sweeper at a time
_LIVE = [s.value for s in TASK_LIVE]
T = m.tasks


def due_now(db: Database, now: datetime, limit: int = 1000) -> list[int]:
    """Live tasks due by `now` and not leased by anyone alive, most overdue first."""
    with db.read() as conn:
        rows = conn.execute(
            sa.select(T.c.task_id)
            .where(
                T.c.status.in_(_LIVE),
                T.c.next_run_at <= now,
                sa.or_(T.c.lease_owner.is_(None), T.c.lease_expires_at < now),
            )
            .order_by(T.c.next_run_at)
            .limit(limit)
        ).scalars()
        return [int(r) for r in rows]


class Sweeper:
    """Finds due or abandoned tasks and sends them again."""

    def __init__(
        self,
        db: Database,
        send: Callable[[int], None],
        clock: Callable[[], datetime],
        sweep_seconds: float,
        lease_seconds: float,
        batch: int = 500,
        chores: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._send = send
        self._clock = clock
        self._grace = timedelta(seconds=sweep_seconds)
        self._redispatch = timedelta(seconds=lease_seconds)
        self._every = sweep_seconds
        self._batch = batch
        self._chores = chores  # run after each sweep: schedules, retention (never raises)

    def sweep(self) -> int:
        """One sweep; returns how many messages it sent."""
        now = self._clock()
        overdue = now - self._grace
        # Two transactions, each locking one kind of row: a claim locks a task row and
        # then its outbox rows, so a sweep holding both kinds could deadlock with it.
        with self._db.write() as conn:
            if not self._elected(conn):
                return 0  # another worker's sweeper is at it
            stale = (
                conn.execute(
                    sa.delete(m.outbox)
                    .where(m.outbox.c.deliver_at <= overdue)
                    .returning(m.outbox.c.task_id)
                )
                .scalars()
                .all()
            )
        sent = self._send_all(stale)  # before anything else can fail: the rows are gone
        with self._db.write() as conn:
            if not self._elected(conn):
                return sent
            due = (
                conn.execute(
                    sa.select(T.c.task_id)
                    .where(
                        T.c.status.in_(_LIVE),
                        T.c.next_run_at <= overdue,
                        sa.or_(T.c.lease_owner.is_(None), T.c.lease_expires_at < now),
                        sa.or_(
                            T.c.dispatched_at.is_(None), T.c.dispatched_at <= now - self._redispatch
                        ),
                    )
                    .order_by(T.c.next_run_at)
                    .limit(self._batch)
                )
                .scalars()
                .all()
            )
            if due:
                conn.execute(sa.update(T).where(T.c.task_id.in_(due)).values(dispatched_at=now))
        sent += self._send_all(set(due) - set(stale))  # one message per task a sweep
        if sent:
            log.info(
                "sweeper re-sent %d task(s): %d from the outbox, %d due or abandoned",
                sent,
                len(stale),
                len(due),
            )
        return sent

    def _send_all(self, task_ids: Collection[int]) -> int:
        ids = sorted({int(i) for i in task_ids})
        for task_id in ids:
            self._send(task_id)
        return len(ids)

    def _elected(self, conn: Connection) -> bool:
        """On PostgreSQL, whether this sweeper holds the advisory lock for this transaction."""
        if not self._db.is_postgres:
            return True
        return bool(conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_LOCK_KEY))).scalar())

    def run(self, stop: threading.Event) -> None:
        """Sweep every `sweep_seconds` until `stop` is set; errors are logged, not raised."""
        while not stop.is_set():
            try:
                self.sweep()
            except Exception:
                log.exception("sweep failed; trying again in %.1f s", self._every)
            if self._chores is not None:
                self._chores()
            stop.wait(self._every)
