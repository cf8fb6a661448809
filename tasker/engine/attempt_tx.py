"""One attempt of a transactional step, on its thread: its transaction and its handler.

See `tasker.engine.transactional` for how the pass records the outcome through it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.engine.base import NestedTransaction

from tasker.definition.template import StepTemplate
from tasker.engine.outcome import Outcome, describe
from tasker.engine.runtime import HandlerStep, HandlerTask, StepSequence
from tasker.errors import InvalidStateError

log = logging.getLogger("tasker.engine")


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


#: Runs one attempt's handler and delivers its outcome (`run_handler`, or an observed one).
Runner = Callable[..., None]


def run_in_transaction(
    held: Held,
    runner: Runner,
    template: StepTemplate,
    task: HandlerTask,
    sequence: StepSequence,
    step: HandlerStep,
    token: object,
    deliver: Callable[[Outcome], None],
    cancel_if: Callable[[HandlerTask, StepSequence], Any] | None,
) -> None:
    """The step's thread: begin, run the handler in a savepoint, deliver; never raises.

    The outcome is delivered with the transaction open (`Outcome.held`) unless it broke.
    """
    conn = held.conn
    try:
        conn.begin()  # on SQLite BEGIN IMMEDIATE: the write lock is ours from here
        held.savepoint = conn.begin_nested()
    except Exception as exc:
        held.close()
        deliver(failed(step.name, token, f"its transaction could not begin: {exc}", exc))
        return
    refuse = _refuse_end(held)
    event.listen(conn, "commit", refuse)
    event.listen(conn, "rollback", refuse)
    got: list[Outcome] = []
    step._connection, step._transactional = conn, True
    held._in_handler = True
    try:
        runner(template, task, sequence, step, token, got.append, cancel_if)
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
            outcome = failed(step.name, token, "its transaction was lost before the outcome")
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


def failed(name: str, token: object, why: str, exc: BaseException | None = None) -> Outcome:
    """The outcome of an attempt whose transaction failed around the handler."""
    error = describe(exc) if exc is not None else {"message": "", "backtrace": ""}
    error["message"] = f"transactional step {name!r}: {why}"
    error.setdefault("error_class", "tasker.errors.StepError")
    return Outcome(name, token, ok=False, error=error)
