"""Keeping a task's lease through database trouble, or failing stop.

`Retrier` runs the engine's short reads and writes again while the database is away,
for as long as the lease allows, and tells whether a write that failed had landed.
`halt_process` is what a pass does when it can no longer keep the lease of a task
whose attempts still run in this process (see `Engine.fail_stop`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, OperationalError

from tasker.errors import LeaseLostError
from tasker.store import schema as m
from tasker.store.db import Database

log = logging.getLogger("tasker.engine")
_T = TypeVar("_T")


def _transient(exc: DBAPIError) -> bool:
    """A lost connection or a database that is restarting: worth another try."""
    return bool(exc.connection_invalidated) or isinstance(exc, OperationalError)


#: Called when a pass can no longer keep the lease of a task whose attempts still run
#: in this process: (task_id, why). It must end them (the default ends the process).
FailStop = Callable[[int, str], None]

#: The exit status of a process ended by `halt_process` (EX_TEMPFAIL: start it again).
EXIT_LEASE_LOST = 75


def halt_process(task_id: int, why: str) -> None:
    """End this process at once (the default `FailStop`).

    Python cannot end a step's thread, and another worker is about to own (or owns)
    the task whose step that thread runs.
    """
    log.critical(
        "task %s: %s; ending this process so that no step runs twice at once", task_id, why
    )
    logging.shutdown()
    os._exit(EXIT_LEASE_LOST)


class Retrier:
    """Retries a task's short reads and writes while the database is away."""

    def __init__(self, db: Database, lease_seconds: float) -> None:
        self._db = db
        self.lease_seconds = lease_seconds

    def run(
        self,
        task_id: int,
        body: Callable[[], _T],
        stamp: tuple[int, int] | None = None,
        until: float | None = None,
    ) -> _T | None:
        """Run `body`, one short write or read, retrying while the database is away.

        Retries last at most one lease period: after that the lease may be someone
        else's, and the fence in the write would refuse it anyway; with `until` (a
        `time.monotonic()`), until then if sooner. A write that
        failed after it was sent may have landed: with a `stamp` (the `tx_seq` the
        write gives the task, and the revision it expects) the task row tells, and a
        write that landed returns None instead of being applied twice. Without one
        (the claim) the write is simply tried again: a claim that landed makes the
        retry a no-op, and its lease expires for the sweeper to hand the task on.
        """
        give_up = time.monotonic() + self.lease_seconds
        if until is not None:
            give_up = min(give_up, until)
        delay = 0.05
        while True:
            try:
                return body()
            except DBAPIError as exc:
                if time.monotonic() + delay > give_up or not _transient(exc):
                    raise
                if stamp is not None and self.landed(task_id, stamp, give_up):
                    return None
                log.warning(
                    "task %s: database error, retrying in %.2f s: %s", task_id, delay, exc.orig
                )
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def landed(self, task_id: int, stamp: tuple[int, int], give_up: float) -> bool:
        """After a write that failed, tell whether it landed anyway.

        Every engine write bumps the task's `tx_seq`; steering calls bump it too, and
        also the revision.

        Raises:
            LeaseLostError: it cannot be told (a steering call interleaved): the pass
                ends and the sweeper hands the task on once the lease expires.
        """
        seq, revision = stamp
        while True:
            try:
                with self._db.read() as conn:
                    row = conn.execute(
                        sa.select(m.tasks.c.tx_seq, m.tasks.c.revision).where(
                            m.tasks.c.task_id == task_id
                        )
                    ).one()
                break
            except DBAPIError as exc:
                if time.monotonic() > give_up or not _transient(exc):
                    raise
                time.sleep(0.2)
        if row.revision == revision and row.tx_seq in (seq, seq - 1):
            log.warning(
                "task %s: a write reported an error but %s",
                task_id,
                "had landed" if row.tx_seq == seq else "had not landed; retrying",
            )
            return bool(row.tx_seq == seq)
        raise LeaseLostError(f"task {task_id}: cannot tell whether a failed write landed")
