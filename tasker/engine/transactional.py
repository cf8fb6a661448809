"""Transactional steps: the handler's writes and the step's outcome in one transaction.

A step declared `StepTemplate(transactional=True)` runs its handler on a connection of
tasker's own pool, in a transaction begun for it, inside a savepoint:

1. `StepTransactions.start` (the pass's thread) checks out the connection; the step's
   thread begins the transaction (on SQLite `BEGIN IMMEDIATE`: the single write lock
   is held from here on) and a savepoint, and runs the handler with `step.connection`.
   A run that fails rolls back to the savepoint at once. The outcome is delivered with
   the transaction still open (`Outcome.held`).
2. The pass records the outcome as it records any (`tasker.core.writes.decide`, with
   the other outcomes of its batch); `StepTransactions.write` sends that fenced write
   through the step's connection: the savepoint is released if the step is decided
   `complete` and rolled back otherwise, then the write, then COMMIT.
3. Everything else ends the transaction with a rollback: a write the fence refuses,
   a database error, the attempt's time limit (`Held.abort`), the pass ending, the
   process dying (the server rolls back a dead connection's transaction).

So the handler's writes commit if and only if the step is recorded `complete`.

On SQLite the transaction holds the write lock from its start to its commit, so a pass
runs one transactional step at a time, and writes nothing else of its own while it runs
(another write of its would wait for the lock its own step holds): outcomes of other
steps wait and are written with the transactional step's outcome, through its
connection. Nobody can take the lease meanwhile (nobody else can write). Other writers,
in this process or others (steering, the sweeper, other tasks), wait behind the lock for
SQLite's busy timeout (30 s); to keep them waiting rather than failing, an attempt of a
transactional step on SQLite is limited to `SQLITE_TIME_LIMIT` seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.engine.base import NestedTransaction

from tasker.control.caller import other_database
from tasker.definition.registry import RegisteredTask
from tasker.definition.template import StepTemplate, database_url
from tasker.engine.outcome import Outcome, describe, run_handler
from tasker.engine.runtime import HandlerStep, HandlerTask, StepSequence
from tasker.errors import ConfigurationError, InvalidStateError, StaleRevisionError
from tasker.store.base import Store
from tasker.store.db import Database
from tasker.store.lease import TaskWrite

log = logging.getLogger("tasker.engine")

#: The longest an attempt of a transactional step may hold SQLite's write lock, seconds:
#: below the busy timeout (30 s) that other writers wait for it before they fail.
SQLITE_TIME_LIMIT = 20.0


@dataclass(eq=False)
class Held:
    """The open transaction of one attempt of a transactional step.

    Attributes:
        name: the step's name.
        conn: the connection (checked out of tasker's pool for this attempt).
        savepoint: the savepoint holding the handler's writes, while they are kept
            (None once the run failed and they were rolled back, or not begun).
        aborted: the transaction was ended from outside (time limit, pass ending): its
            outcome no longer counts.
    """

    name: str
    conn: Connection
    savepoint: NestedTransaction | None = None
    aborted: bool = False
    kept: bool = False  # the savepoint was released: the handler's writes are in
    _in_handler: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def usable(self) -> bool:
        """Whether the write of the outcome can go through this transaction."""
        return not self.aborted and not self.conn.invalidated and self.conn.in_transaction()

    def abort(self) -> None:
        """End the transaction from another thread: the server rolls it back.

        The connection is invalidated (closed): the handler's next statement on it raises,
        and nothing it wrote can commit.
        """
        with self._lock:
            if self.aborted:
                return
            self.aborted = True
        try:
            self.conn.invalidate()
        except Exception:  # already broken: it is rolled back either way
            log.debug("step %s: invalidating its connection failed", self.name, exc_info=True)

    def close(self) -> None:
        """Roll back what is left open and give the connection back; never raises."""
        try:
            self.conn.close()  # rolls back an open transaction
        except Exception:
            log.debug("step %s: closing its connection failed", self.name, exc_info=True)


def _refuse_end(held: Held) -> Callable[[Connection], None]:
    def refuse(_conn: Connection) -> None:
        if held._in_handler:
            raise InvalidStateError(
                f"step {held.name!r}: do not commit or roll back step.connection; the step's "
                "transaction commits with its outcome (raise to roll its writes back)"
            )

    return refuse


def _run(
    held: Held,
    template: StepTemplate,
    task: HandlerTask,
    sequence: StepSequence,
    step: HandlerStep,
    token: object,
    deliver: Callable[[Outcome], None],
    cancel_if: Callable[[HandlerTask, StepSequence], Any] | None,
) -> None:
    """The step's thread: begin, run the handler in a savepoint, deliver; never raises."""
    conn = held.conn
    try:
        conn.begin()  # on SQLite BEGIN IMMEDIATE: the write lock is ours from here
        held.savepoint = conn.begin_nested()
    except Exception as exc:
        held.close()
        deliver(_failed(step.name, token, f"its transaction could not begin: {exc}", exc))
        return
    refuse = _refuse_end(held)
    event.listen(conn, "commit", refuse)
    event.listen(conn, "rollback", refuse)
    got: list[Outcome] = []
    step._connection, step._transactional = conn, True
    held._in_handler = True
    try:
        run_handler(template, task, sequence, step, token, got.append, cancel_if)
    finally:
        held._in_handler = False
        step._connection = None
    outcome = got[0]
    sp = held.savepoint
    if not (conn.in_transaction() and sp is not None and sp.is_active):
        # The handler ended the transaction (a refused commit leaves the driver's open
        # while SQLAlchemy forgets it): drop the connection, the server rolls it back.
        held.abort()
    if not outcome.ok:
        _roll_back_run(held)
    outcome.held = held if held.usable() else None
    if outcome.held is None:
        held.close()
        if outcome.ok:  # the transaction broke under the handler: its writes are gone
            outcome = _failed(step.name, token, "its transaction was lost before the outcome")
    deliver(outcome)


def _roll_back_run(held: Held) -> None:
    """Undo the handler's writes of a failed run, keeping the transaction (and lock)."""
    sp, held.savepoint = held.savepoint, None
    if sp is None or not sp.is_active or held.aborted:
        return
    try:
        sp.rollback()
    except Exception:  # the transaction is broken: it is closed and rolled back whole
        log.debug("step %s: rolling back its savepoint failed", held.name, exc_info=True)
        held.abort()


def _failed(name: str, token: object, why: str, exc: BaseException | None = None) -> Outcome:
    error = describe(exc) if exc is not None else {"message": "", "backtrace": ""}
    error["message"] = f"transactional step {name!r}: {why}"
    error.setdefault("error_class", "tasker.errors.StepError")
    return Outcome(name, token, ok=False, error=error)


class StepTransactions:
    """Starts transactional steps and writes their outcomes in their transactions."""

    def __init__(self, db: Database, store: Store) -> None:
        self._db = db
        self._store = store
        #: SQLite: one writer, so one transactional step per pass, and no other write of
        #: the pass while it runs (see the module's docstring).
        self.exclusive = not db.is_postgres

    def problem(self, template: StepTemplate) -> str | None:
        """Why `template` cannot run as declared on this database, or None."""
        if template.database is None:
            return None
        where = f"step {template.name!r}"
        differs = other_database(self._db.engine.url, database_url(where, template.database))
        if differs is None:
            return None
        return (
            f"{where} is transactional on another database than tasker's ({differs}): its "
            "writes can commit with its outcome only in tasker's own database"
        )

    def check(self, reg: RegisteredTask) -> None:
        """Refuse a task whose transactional steps declare another database than tasker's.

        Raises:
            ConfigurationError: naming the step and what differs.
        """
        for template in reg.steps.values():
            problem = self.problem(template)
            if problem is not None:
                raise ConfigurationError(f"task {reg.name!r}: {problem}")

    def time_limit(self, limit: float) -> float:
        """The time limit of a transactional attempt whose step allows `limit` seconds."""
        return min(limit, SQLITE_TIME_LIMIT) if self.exclusive else limit

    def start(
        self,
        submit: Callable[..., None],
        template: StepTemplate,
        task: HandlerTask,
        sequence: StepSequence,
        step: HandlerStep,
        token: object,
        deliver: Callable[[Outcome], None],
        cancel_if: Callable[[HandlerTask, StepSequence], Any] | None,
    ) -> Held | None:
        """Start one attempt on a thread (`submit`); returns its transaction, or None.

        A step that declares another database than tasker's fails at once, for good,
        and its handler does not run (None).
        """
        problem = self.problem(template)
        if problem is not None:
            error = describe(ConfigurationError(problem))
            deliver(Outcome(step.name, token, ok=False, error=error, permanent=True))
            return None
        conn = self._db.engine.connect().execution_options(tasker_write=True)
        held = Held(step.name, conn)
        submit(_run, held, template, task, sequence, step, token, deliver, cancel_if)
        return held

    def write(self, held: Held, w: TaskWrite, complete: bool) -> int:
        """Send `w` through the step's transaction and commit it.

        The handler's writes commit with it only if `complete` (the step is decided
        `complete`): its savepoint is released, else rolled back, before the write.
        The transaction is closed in every case but a `StaleRevisionError` (the write
        is then planned again and sent through it again).

        Returns:
            The write's `tx_seq`.

        Raises:
            StaleRevisionError: a steering call changed the task: nothing written yet.
            LeaseLostError: the fence refused the write: everything is rolled back.
            TransactionLost: the transaction failed, or a write planned again must drop
                handler writes already released; `.sent` says whether the commit was
                sent (then it may have landed).
        """
        sent = False
        try:
            self._settle(held, complete)
            seq = self._store.apply(w, caller=held.conn)
            sent = True
            held.conn.commit()
        except StaleRevisionError:
            raise
        except sa.exc.DBAPIError as exc:
            held.close()
            raise TransactionLost(str(exc.orig), sent=sent) from exc
        except BaseException:
            held.close()
            raise
        held.close()
        self._db.commits += 1
        return seq

    @staticmethod
    def _settle(held: Held, complete: bool) -> None:
        """Keep (release) or drop (roll back) the handler's writes, once."""
        sp, held.savepoint = held.savepoint, None
        if sp is not None and sp.is_active:
            (sp.commit if complete else sp.rollback)()
            held.kept = complete
        elif held.kept and not complete:
            # Kept by a write the fence refused for a steering call, and now planned
            # otherwise: only a rollback of the whole transaction drops them.
            held.close()
            raise TransactionLost("the step's outcome changed after a steering call", sent=False)


class TransactionLost(Exception):
    """A transactional step's transaction failed while its outcome was written."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


def held_of(batch: Sequence[Outcome]) -> list[Outcome]:
    """The outcomes of `batch` whose transaction is still open."""
    return [o for o in batch if o.held is not None]
