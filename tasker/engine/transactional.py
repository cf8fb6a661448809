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
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasker.control.caller import other_database
from tasker.definition.registry import RegisteredTask
from tasker.definition.template import StepTemplate, database_url
from tasker.engine.attempt_tx import Held, Runner, failed, run_in_transaction
from tasker.engine.keeping import Retrier
from tasker.engine.outcome import Outcome, describe
from tasker.engine.runtime import HandlerStep, HandlerTask, StepSequence
from tasker.errors import ConfigurationError, StaleRevisionError
from tasker.store.base import Store
from tasker.store.db import Database
from tasker.store.lease import TaskWrite

log = logging.getLogger("tasker.engine")

#: The longest an attempt of a transactional step may hold SQLite's write lock, seconds:
#: below the busy timeout (30 s) that other writers wait for it before they fail.
SQLITE_TIME_LIMIT = 20.0


class StepTransactions:
    """Starts transactional steps and writes their outcomes in their transactions."""

    def __init__(self, db: Database, store: Store, retrier: Retrier) -> None:
        self._db = db
        self._store = store
        self._retrier = retrier
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
        runner: Runner,
        template: StepTemplate,
        task: HandlerTask,
        sequence: StepSequence,
        step: HandlerStep,
        token: object,
        deliver: Callable[[Outcome], None],
        cancel_if: Callable[[HandlerTask, StepSequence], Any] | None,
    ) -> Held | None:
        """Start one attempt on a thread (`submit`); returns its transaction, or None.

        `runner` runs the handler in the transaction (`run_handler`, or one that reports
        the attempt to the observers).

        A step that declares another database than tasker's fails at once, for good,
        and its handler does not run (None); without a connection (the database is
        away) the attempt fails and is retried.
        """
        problem = self.problem(template)
        if problem is not None:
            error = describe(ConfigurationError(problem))
            deliver(Outcome(step.name, token, ok=False, error=error, permanent=True))
            return None
        try:
            conn = self._db.connect_to_write()
        except Exception as exc:  # the database is away: a failed attempt, retried
            deliver(failed(step.name, token, f"no connection for its transaction: {exc}", exc))
            return None
        held = Held(step.name, conn)
        submit(
            run_in_transaction,
            held,
            runner,
            template,
            task,
            sequence,
            step,
            token,
            deliver,
            cancel_if,
        )
        return held

    def record(self, o: Outcome, w: TaskWrite, complete: bool, stamp: tuple[int, int]) -> int:
        """Write `w`, which records `o`, through `o`'s transaction, and commit it.

        The handler's writes commit only if the write records the step `complete`. A
        commit whose answer was lost may have landed: the task row tells.

        Args:
            stamp: the `tx_seq` the write gives the task, and the revision it expects.

        Returns:
            The write's `tx_seq`.

        Raises:
            StaleRevisionError: as `Store.apply` (the transaction stays open for the
                write planned again).
            TransactionLost: nothing landed; the transaction is closed.
            LeaseLostError: the fence refused the write; everything was rolled back.
        """
        held = o.held
        assert held is not None
        try:
            seq = self._write(held, w, complete)
        except StaleRevisionError:
            raise
        except TransactionLost as exc:
            o.held = None
            give_up = time.monotonic() + self._retrier.lease_seconds
            if exc.sent and self._retrier.landed(w.lease.task_id, stamp, give_up):
                return stamp[0]
            raise
        except BaseException:
            o.held = None
            raise
        o.held = None
        return seq

    def _write(self, held: Held, w: TaskWrite, complete: bool) -> int:
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


def lost(o: Outcome, exc: TransactionLost) -> Outcome:
    """The outcome to record for an attempt whose transaction was lost with its outcome."""
    if not o.ok:
        return replace(o, held=None)
    error = describe(exc)
    error["message"] = f"the transaction of step {o.name!r} failed before it committed: {exc}"
    return Outcome(o.name, o.token, ok=False, error=error, annotations=o.annotations)


class Running(Protocol):
    """What these rules read of a running attempt (`tasker.engine.pass_state.Running`)."""

    held: Held | None
    deadline: float


@dataclass
class PassTransactions:
    """The transactional steps of one engine pass, and the SQLite rules they follow.

    Attributes:
        waiting: outcomes held back while a transactional step runs (SQLite).
        deferred: transactional steps started in the database whose thread waits for
            the one running to end (SQLite: one write lock): each name and what
            `StepTransactions.start` takes after its `submit`.
        via: the connection the pass writes through while it records a transactional
            outcome (SQLite: the only one that can write then).
    """

    waiting: list[Outcome] = field(default_factory=list)
    deferred: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    via: Connection | None = None

    @staticmethod
    def in_flight(running: Mapping[str, Running], besides: Collection[str] = ()) -> bool:
        """Whether a transactional step (other than those named `besides`) runs."""
        return any(
            r.held is not None and not r.held.aborted and n not in besides
            for n, r in running.items()
        )

    def gate(
        self,
        batch: list[Outcome],
        running: Mapping[str, Running],
        requeue: Callable[[Outcome], None],
        exclusive: bool,
    ) -> list[Outcome] | None:
        """What of `batch` to write now (None: nothing yet).

        One transactional outcome per write (a write commits one transaction): others
        are put back (`requeue`) for the next. With `exclusive` (SQLite), while a
        transactional step runs nothing is written: its transaction holds the lock.
        """
        held = [o for o in batch if o.held is not None]
        for extra in held[1:]:
            batch.remove(extra)
            requeue(extra)
        if not exclusive:
            return batch
        batch, self.waiting = self.waiting + batch, []
        if not held and self.in_flight(running, {o.name for o in batch}):
            self.waiting = batch
            return None
        if held:
            assert held[0].held is not None
            self.via = held[0].held.conn
        return batch

    def defer(self, name: str, r: Running, args: tuple[Any, ...]) -> None:
        """Start step `name`'s attempt (`args`) once no transactional step runs (SQLite)."""
        r.deadline = float("inf")  # its time limit starts with its thread
        self.deferred.append((name, args))

    def take_turn(self, running: Mapping[str, Running]) -> tuple[str, tuple[Any, ...]] | None:
        """The deferred step whose turn it is, and its attempt's `args` (or None)."""
        if self.deferred and not self.in_flight(running):
            return self.deferred.pop(0)
        return None

    def end(self, running: dict[str, Any]) -> None:
        """The pass ends with attempts running: roll back transactional steps' work.

        Their outcomes can no longer be recorded by this pass; a transactional step not
        started yet (SQLite) never will be.
        """
        for name, _ in self.deferred:
            running.pop(name, None)
        self.deferred = []
        for r in running.values():
            if r.held is not None:
                r.held.abort()
