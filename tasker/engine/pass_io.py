"""The reads and fenced writes an engine pass makes of its task, retried while the database is away.

Every write of a pass goes through `PassIO.apply`: it is fenced by the lease and the
task's revision, and notes how long the lease it renewed is surely the pass's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import sqlalchemy as sa

from tasker.core.events import Event
from tasker.core.spawns import Children
from tasker.core.states import Status
from tasker.core.views import StepView
from tasker.engine.keeping import Retrier
from tasker.engine.outcome import Outcome
from tasker.engine.pass_state import Pass
from tasker.engine.spawning import awaited_children, awaiting_children
from tasker.engine.transactional import StepTransactions
from tasker.errors import StaleRevisionError
from tasker.settings import Settings
from tasker.store import lease as leases
from tasker.store import schema as m
from tasker.store.base import Store
from tasker.store.db import Database
from tasker.store.events import read_events
from tasker.store.steps import read_steps, views_of


class PassIO:
    """Reads and writes the task of an engine pass (thread-safe: no state of its own)."""

    def __init__(
        self,
        db: Database,
        store: Store,
        settings: Settings,
        retrier: Retrier,
        txn: StepTransactions,
        now: Callable[[], datetime],
    ) -> None:
        self._db = db
        self._store = store
        self._settings = settings
        #: Runs a read or write, retrying while the database is away (`Retrier.run`).
        self.retrying = retrier.run
        self._txn = txn
        self._now = now

    def taken_over(self, p: Pass) -> bool:
        """Whether the task is live under someone else's lease (assumed if it cannot be read)."""
        try:
            with self._db.read() as conn:
                row = conn.execute(
                    sa.select(m.tasks.c.status, m.tasks.c.lease_owner, m.tasks.c.lease_epoch).where(
                        m.tasks.c.task_id == p.lease.task_id
                    )
                ).one()
        except Exception:
            return True
        mine = row.lease_owner == p.lease.owner and row.lease_epoch == p.lease.epoch
        return row.status == Status.IN_PROGRESS.value and not mine

    def keep_seconds(self) -> float:
        """How long after a renewal is sent the lease still counts as ours.

        Two thirds of it, leaving a third as margin for clocks and a thread short of the GIL.
        """
        return self._settings.lease_seconds * 2 / 3

    def until(self, p: Pass) -> float | None:
        """How long a write of the pass may retry (a `time.monotonic()`, or None).

        While attempts run, only while the lease is safely ours (then `_wait_out`
        decides); else a lease period.
        """
        return p.safe_until if p.running else None

    def renew(self, p: Pass, *, once: bool = False) -> None:
        """Renew the lease, and nothing else (a steering call meanwhile: read again).

        Args:
            once: try once, and let a database error through (else retry, see `retrying`).
        """
        while True:
            now, sent = self._now(), time.monotonic()
            w = leases.TaskWrite(
                p.lease, p.revision, now, now + timedelta(seconds=self._settings.lease_seconds)
            )
            try:
                self.apply(p, w, sent, once=once)
            except StaleRevisionError:
                self.reload(p)
                continue
            return

    def apply(self, p: Pass, w: leases.TaskWrite, sent: float, *, once: bool = False) -> None:
        """Send one fenced write of the pass and note what it gave the task.

        Args:
            sent: `time.monotonic()` before the write was built: the lease it renews counts
                as ours from then on (see `_keep_seconds`).
            once: try once, and let a database error through (else retry, see `retrying`).

        Raises:
            StaleRevisionError: a steering call changed the task; nothing was written.
        """
        seq = p.tx_seq + 1
        if p.txn.via is not None:  # SQLite: inside the transactional step's transaction
            written: int | None = self._store.apply(w, caller=p.txn.via)
        elif once:
            written = self._store.apply(w)
        else:
            written = self.retrying(
                p.lease.task_id, partial(self._store.apply, w), (seq, p.revision), self.until(p)
            )
        p.tx_seq = seq if written is None else written
        p.safe_until = sent + self.keep_seconds()
        if p.slots is not None and w.finish is None:  # the slots last as long as the lease
            p.slots.renew(w.lease_until)

    def apply_held(self, p: Pass, w: leases.TaskWrite, o: Outcome, complete: bool) -> None:
        """`_apply` through a transactional step's transaction, committing it.

        Raises:
            As `StepTransactions.record`.
        """
        sent = time.monotonic()
        p.tx_seq = self._txn.record(o, w, complete, (p.tx_seq + 1, p.revision))
        p.safe_until = sent + self.keep_seconds()

    def children(self, p: Pass, views: dict[str, StepView]) -> dict[str, Children]:
        """Read the awaited children of the steps awaiting them (no read if none does).

        Of a decision step whose children are all done, the decision it kept too.
        """
        steps = awaiting_children(views.values())
        if not steps:
            return {}
        templates = p.reg.steps
        deciders = {i for i, n in steps.items() if n in templates and templates[n].branches}
        read = partial(awaited_children, self._db, steps, deciders)
        got = self.retrying(p.lease.task_id, read, None, self.until(p))
        assert got is not None  # only a write that landed returns None
        return got

    def reload(self, p: Pass) -> None:
        """Read the task's steps again after a steering call; ours in flight stay as known.

        The read is retried while the database is away, as writes are.
        """
        read = self.retrying(
            p.lease.task_id, partial(self._read, p.lease.task_id), None, self.until(p)
        )
        assert read is not None  # only a write that landed returns None
        task, rows, events = read
        fresh = views_of(rows)
        p.events = events
        # A running step keeps the state this pass gave it (the columns the engine writes),
        # and takes what steering may change meanwhile (its inputs, its retry limit). A step
        # whose attempt was abandoned (timed out, its thread still running) has its time-out
        # recorded: what is stored is what steering made of it since, and it is taken whole.
        p.views = {
            n: (replace(v, **{c: getattr(p.views[n], c) for c in m.STEP_WRITE}))
            if n in p.running and not p.running[n].abandoned
            else v
            for n, v in fresh.items()
        }
        p.revision, p.tx_seq = int(task.revision), int(task.tx_seq)
        p.children = self.children(p, p.views)

    def _read(self, task_id: int) -> tuple[Any, list[Any], list[Event]]:
        """The task's revision and transaction number, its step rows and its events."""
        with self._db.read() as conn:
            task = conn.execute(
                sa.select(m.tasks.c.revision, m.tasks.c.tx_seq).where(m.tasks.c.task_id == task_id)
            ).one()
            rows = read_steps(conn, [task_id])
            waiting = any(getattr(r, "wait_for", None) for r in rows)
            return task, rows, read_events(conn, task_id) if waiting else []

    def nudged(self, task_id: int, now: datetime) -> bool:
        """Whether a message for the task is due that no claim has taken (its outbox row)."""
        o = m.outbox
        due = sa.select(o.c.outbox_id).where(o.c.task_id == task_id, o.c.deliver_at <= now)
        with self._db.read() as conn:
            return conn.execute(due.limit(1)).first() is not None

    def events(self, task_id: int) -> list[Event]:
        """The task's events (a step of it waits for one)."""
        with self._db.read() as conn:
            return read_events(conn, task_id)
