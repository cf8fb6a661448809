"""The rules a pass follows for transactional steps (`PassTransactions`), without a database:
one transactional outcome per write, and on SQLite nothing written while one runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasker.engine.attempt_tx import Held
from tasker.engine.outcome import Outcome
from tasker.engine.transactional import PassTransactions, TransactionLost, lost


@dataclass
class Run:
    held: Held | None = None
    deadline: float = 0.0


class FakeConn:
    """Stands in for a Connection in `Held` (these rules never use it)."""

    invalidated = False

    def in_transaction(self) -> bool:
        return True


def held(name: str) -> Held:
    return Held(name, FakeConn())  # type: ignore[arg-type]


def outcome(name: str, h: Held | None = None, ok: bool = True) -> Outcome:
    return Outcome(name, object(), ok=ok, held=h)


def test_one_transactional_outcome_per_write_the_others_are_put_back() -> None:
    # Given a batch with two transactional outcomes and a plain one
    t1, t2 = outcome("t1", held("t1")), outcome("t2", held("t2"))
    plain = outcome("p")
    put_back: list[Outcome] = []

    # When it is gated (PostgreSQL)
    batch = PassTransactions().gate([t1, plain, t2], {}, put_back.append, exclusive=False)

    # Then the first goes with the plain outcome, the second waits for the next write
    assert batch == [t1, plain]
    assert put_back == [t2]


def test_on_sqlite_nothing_is_written_while_a_transactional_step_runs() -> None:
    # Given a transactional step running and a plain outcome arriving
    txn = PassTransactions()
    running: dict[str, Any] = {"t": Run(held("t")), "p": Run()}
    plain = outcome("p")

    # When it is gated, Then it waits (its write would wait for the step's own lock)
    assert txn.gate([plain], running, lambda o: None, exclusive=True) is None
    assert txn.gate([], running, lambda o: None, exclusive=True) is None  # no renewal either

    # And when the transactional outcome arrives, both are written through its connection
    h = running["t"].held
    t = outcome("t", h)
    assert txn.gate([t], running, lambda o: None, exclusive=True) == [plain, t]
    assert txn.via is h.conn


def test_on_postgres_plain_outcomes_are_written_while_a_transactional_step_runs() -> None:
    txn = PassTransactions()
    running: dict[str, Any] = {"t": Run(held("t")), "p": Run()}
    plain = outcome("p")
    assert txn.gate([plain], running, lambda o: None, exclusive=False) == [plain]
    assert txn.via is None


def test_an_aborted_transaction_no_longer_holds_the_writes_back() -> None:
    # Given a transactional step whose attempt passed its time limit (aborted)
    h = held("t")
    h.aborted = True
    running: dict[str, Any] = {"t": Run(h)}

    # When its time-out outcome is gated, Then it is written at once, normally
    timed_out = Outcome("t", object(), ok=False, timed_out=True)
    assert PassTransactions().gate([timed_out], running, lambda o: None, True) == [timed_out]


def test_on_sqlite_a_second_transactional_step_starts_when_the_first_is_written() -> None:
    # Given one transactional step running and a second one deferred with its attempt
    txn = PassTransactions()
    first, second = Run(held("a")), Run()
    running: dict[str, Any] = {"a": first, "b": second}
    txn.defer("b", second, ("args of b",))
    assert second.deadline == float("inf")  # its time limit starts with its thread

    # When it is asked for its turn while the first runs, Then it waits ...
    assert txn.take_turn(running) is None
    # ... and gets it, with its attempt, once the first is done
    del running["a"]
    assert txn.take_turn(running) == ("b", ("args of b",))
    assert txn.deferred == []


def test_a_pass_that_ends_aborts_its_transactions_and_forgets_deferred_steps() -> None:
    txn = PassTransactions()
    h = held("a")
    aborted: list[str] = []
    h.abort = lambda: aborted.append("a")  # type: ignore[method-assign]
    later = Run()
    running: dict[str, Any] = {"a": Run(h), "b": later}
    txn.defer("b", later, ())

    txn.end(running)

    assert aborted == ["a"]
    assert "b" not in running


def test_a_lost_transaction_makes_a_successful_attempt_a_failed_one() -> None:
    ok = outcome("t", held("t"))
    failed = lost(ok, TransactionLost("server closed the connection", sent=False))
    assert not failed.ok and failed.held is None
    assert "failed before it committed" in (failed.error or {})["message"]
    already = outcome("t", held("t"), ok=False)
    assert lost(already, TransactionLost("x", sent=False)).ok is False
