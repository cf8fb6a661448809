"""The sweeper (the in-time scheduler): re-sends what is due and lost.

The database is the source of truth, so a lost message, a lost delay or a dead
worker never strands a task. Each sweep (on PostgreSQL, by one worker at a time,
elected by an advisory lock) looks at
- outbox rows still there a grace period (`sweep_seconds`) after they were due:
  the process that wrote them may have died before sending; they are deleted, and
- live tasks due that long ago that are not leased, or whose lease expired, and that
  no sweep has seen to within `lease_seconds` (a wiped queue, a killed worker),
and sends a message only for the tasks whose message is lost:
- a task whose lease expired was claimed, so its message was consumed: a worker
  died mid-pass, and the task is re-sent;
- any other task is re-sent only if the broker no longer holds a message for it
  (`Dispatch.held`: waiting, delayed, or taken by a live worker and not yet acked).
  Under a backlog most due tasks are merely queued: they are left alone, so an
  overloaded system does not get a second copy of its queue. Dramatiq's own
  recovery hands a dead worker's unacked messages back to the queue (the sweep
  triggers it); a message older than `10 * lease_seconds` no longer counts as held,
  so a broker that lost track of one strands nothing.
Each sweep sees to at most `batch` due tasks, the most overdue first; a task seen to
(re-sent, or found held) is looked at again after `lease_seconds`, so a backlog
larger than a batch is walked through, sweep by sweep. A sweep costs two indexed
queries (`deliver_at` on the outbox, the partial due index on tasks: see
`tasker.store.due`), one update of
the tasks it saw to, and, if any were found, one round trip to the broker per kind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasker.engine.observer import Observer
from tasker.store import schema as m
from tasker.store.db import Database
from tasker.store.due import col, tasks_through

log = logging.getLogger("tasker.sweeper")

_LOCK_KEY = 0x7A5C3E  # the advisory lock that elects one sweeper at a time
T = m.tasks
#: The partial index over live tasks' `next_run_at` that the due queries read.
DUE_INDEX = "ix_tasker_tasks_due"


def due_now(db: Database, now: datetime, limit: int = 1000) -> list[int]:
    """Live tasks due by `now` and not leased by anyone alive, most overdue first."""
    with db.read() as conn:
        rows = conn.execute(
            sa.select(col("task_id"))
            .select_from(tasks_through(DUE_INDEX, not db.is_postgres))
            .where(
                sa.text(m.LIVE_SQL),
                col("next_run_at") <= now,
                sa.or_(col("lease_owner").is_(None), col("lease_expires_at") < now),
            )
            .order_by(col("next_run_at"))
            .limit(limit)
        ).scalars()
        return [int(r) for r in rows]


class Sweeper:
    """Finds due or abandoned tasks whose message is lost, and sends them again."""

    def __init__(
        self,
        db: Database,
        send: Callable[[int], None],
        clock: Callable[[], datetime],
        sweep_seconds: float,
        lease_seconds: float,
        batch: int = 500,
        chores: Callable[[], None] | None = None,
        held: Callable[[Collection[int], float], set[int]] | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._db = db
        self._send = send
        self._held = held  # the broker's `held`; None: it holds nothing (re-send all)
        self._clock = clock
        self._grace = timedelta(seconds=sweep_seconds)
        self._redispatch = timedelta(seconds=lease_seconds)
        self._max_age = 10 * lease_seconds
        self._every = sweep_seconds
        self._batch = batch
        self._chores = chores  # run after each sweep: schedules, retention (never raises)
        self._observer = observer or Observer()

    def sweep(self) -> int:
        """One sweep; returns how many messages it sent."""
        now = self._clock()
        overdue = now - self._grace
        # Two transactions, each locking one kind of row: a claim locks a task row and
        # then its outbox rows, so a sweep holding both kinds could deadlock with it.
        with self._db.write() as conn:
            if not self._elected(conn):
                return 0  # another worker's sweeper is at it
            stale = set(
                conn.execute(
                    sa.delete(m.outbox)
                    .where(m.outbox.c.deliver_at <= overdue)
                    .returning(m.outbox.c.task_id)
                ).scalars()
            )
        # A held task is covered by its message (and, should that be lost, by the due scan).
        lost = stale - self._still_held(stale)
        sent = self._send_all(lost)  # before anything else can fail: the rows are gone
        with self._db.write() as conn:
            if not self._elected(conn):
                return sent
            due = conn.execute(
                sa.select(col("task_id"), col("lease_owner"))
                .select_from(tasks_through(DUE_INDEX, not self._db.is_postgres))
                .where(
                    sa.text(m.LIVE_SQL),
                    col("next_run_at") <= overdue,
                    sa.or_(col("lease_owner").is_(None), col("lease_expires_at") < now),
                    sa.or_(
                        col("dispatched_at").is_(None),
                        col("dispatched_at") <= now - self._redispatch,
                    ),
                )
                .order_by(col("next_run_at"))
                .limit(self._batch)
            ).all()
            if due:
                seen = [int(r.task_id) for r in due]
                conn.execute(sa.update(T).where(T.c.task_id.in_(seen)).values(dispatched_at=now))
        abandoned = {int(r.task_id) for r in due if r.lease_owner is not None}
        unclaimed = {int(r.task_id) for r in due if r.lease_owner is None}
        queued = self._still_held(unclaimed)
        sent += self._send_all((abandoned | (unclaimed - queued)) - lost)
        if sent or queued:
            self._observer.on_sweeper_resend(sent, len(queued))
        if sent:
            log.info(
                "sweeper re-sent %d task(s): %d from the outbox, %d due or abandoned; "
                "%d due task(s) still queued",
                sent,
                len(lost),
                sent - len(lost),
                len(queued),
            )
        return sent

    def _still_held(self, task_ids: set[int]) -> set[int]:
        """The tasks whose message the broker still holds; none if it cannot say."""
        if self._held is None or not task_ids:
            return set()
        try:
            return self._held(task_ids, self._max_age)
        except Exception:
            log.warning("could not ask the broker what it holds; re-sending", exc_info=True)
            return set()

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
