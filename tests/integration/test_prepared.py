"""The SQLite hot writes run on the driver connection write what SQLAlchemy would write.

`tasker.store.prepared` runs SQLAlchemy's compilation of a statement on the driver
connection. These tests run the same statements both ways on two fresh databases and
compare the stored rows column by column, and check that driver errors come out as
SQLAlchemy's, so the engine's retries see the same errors.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tasker import Tasker, TaskRequest
from tasker.store import prepared
from tasker.store import schema as m
from tasker.store import sqlite as store
from tasker.store.lease import Lease, TaskWrite
from tasker.store.steps import read_steps
from tasker.testing.clock import FakeClock

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.diamond_app import TASK_NAME, make_app

CREATED = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
NOW = CREATED + timedelta(minutes=1, microseconds=1)


def _app(folder: Path, name: str) -> Tasker:
    app = make_app(database_url=f"sqlite:///{folder / name}", clock=FakeClock(CREATED))
    app.migrate()
    return app


@pytest.fixture
def two_apps(tmp_path: Path) -> Iterator[list[Tasker]]:
    apps = [_app(tmp_path, "a.db"), _app(tmp_path, "b.db")]
    for app in apps:  # the same task (same ids) in both
        app.enqueue(TaskRequest(name=TASK_NAME, context={"k": [1, "two"]}))
    yield apps
    for app in apps:
        app.close()


def _rows(app: Tasker, table: sa.Table) -> list[Any]:
    with app.db.read() as conn:
        return [tuple(r) for r in conn.execute(sa.select(table).order_by(*table.primary_key))]


def _writes(task_id: int, step_ids: list[int]) -> list[tuple[Any, Any]]:
    """(statement, rows) of the engine's writes, with every kind of value they take."""
    later = NOW + timedelta(seconds=30)
    steps = [
        {
            **{f"p_{c}": None for c in m.STEP_WRITE},  # a step column added since: NULL
            "p_id": i,
            "p_now": NOW,
            "p_status": "error",
            "p_attempts": n + 1,
            "p_results": {"nested": {"list": [1, 2.5, None, True]}, "s": "é"} if n else None,
            "p_error": None if n else {"message": "boom"},
            "p_last_attempted_at": NOW,
            "p_next_attempt_at": None if n else later,
            "p_processed_at": later,
            "p_reattempts": n,
            "p_awaiting": "children" if n else None,
        }
        for n, i in enumerate(step_ids)
    ]
    transitions = [
        {
            "workflow_step_id": i,
            "task_id": task_id,
            "from_status": "pending",
            "to_status": "in_progress",
            "attempt": 1,
            "reason": "started",
            "details": {"why": ["x"]} if n else None,
            "tx_seq": 7,
            "created_at": NOW,
        }
        for n, i in enumerate(step_ids)
    ]
    outbox = [{"task_id": task_id, "deliver_at": later, "created_at": NOW}]
    return [(store._STEPS, steps), (store._STEP_TRANSITIONS, transitions), (store._OUTBOX, outbox)]


def test_the_hot_writes_store_what_sqlalchemy_stores(two_apps: list[Tasker]) -> None:
    """Given the same task in two databases, when the engine's statements run through
    SQLAlchemy in one and on the driver connection in the other, then every stored row
    is the same, and the rows they return are read the same."""
    by_sa, by_driver = two_apps
    with by_sa.db.read() as conn:
        task_id = int(conn.execute(sa.select(sa.func.max(m.tasks.c.task_id))).scalar_one())
        step_ids = [int(r.workflow_step_id) for r in read_steps(conn, [task_id])]
    claim = {"p_task_id": task_id, "p_owner": "w0", "p_now": NOW, "p_expires": NOW}
    with by_sa.db.write() as conn:
        claimed_sa = dict(conn.execute(store._CLAIM, claim).one()._mapping)
        for stmt, rows in _writes(task_id, step_ids):
            conn.execute(stmt, rows)
    with by_driver.db.write() as conn:
        (claimed_driver,) = prepared.execute(conn, store._CLAIM, claim)
        for stmt, rows in _writes(task_id, step_ids):
            prepared.execute_many(conn, stmt, rows)
    assert claimed_driver == claimed_sa
    assert claimed_driver["context"] == {"k": [1, "two"]}
    for table in (m.tasks, m.workflow_steps, m.step_transitions, m.outbox):
        assert _rows(by_driver, table) == _rows(by_sa, table), table.name
    with by_driver.db.write() as conn:
        (row,) = prepared.execute(
            conn,
            store._FENCE,
            {
                "p_task_id": task_id,
                "p_epoch": claimed_driver["lease_epoch"],
                "p_owner": "w0",
                "p_revision": 0,
                "p_now": NOW,
                **{f"p_{k}": v for k, v in _unfinished_write(task_id, NOW).task_values().items()},
            },
        )
    assert row == {"tx_seq": claimed_driver["tx_seq"] + 1}  # a fence that matched


def _unfinished_write(task_id: int, now: datetime) -> TaskWrite:
    """A fenced write that ends nothing: its task values are the fence's parameters."""
    return TaskWrite(Lease(task_id, "w0", 1), 0, now, now)


def test_driver_errors_come_out_as_sqlalchemy_errors(two_apps: list[Tasker]) -> None:
    """Given a row that breaks a constraint, when it is written on the driver connection,
    then SQLAlchemy's error of the same kind is raised and nothing is stored."""
    app = two_apps[0]
    bad = {"workflow_step_id": 10**9, "task_id": 10**9, "from_status": None,
           "to_status": "nonsense", "attempt": 0, "reason": "x", "details": None,
           "tx_seq": 1, "created_at": NOW}  # fmt: skip
    before = _rows(app, m.step_transitions)
    with pytest.raises(sa.exc.IntegrityError), app.db.write() as conn:
        prepared.execute_many(conn, store._STEP_TRANSITIONS, [bad])
    assert _rows(app, m.step_transitions) == before


def test_a_statement_rendered_per_execution_is_refused(two_apps: list[Tasker]) -> None:
    """Given a statement with an expanding IN, when it is prepared, then it is refused
    (its text depends on each execution's parameters)."""
    stmt = sa.delete(m.outbox).where(m.outbox.c.task_id.in_(sa.bindparam("ids", expanding=True)))
    with pytest.raises(ValueError, match="rendered per execution"):
        prepared.Prepared(stmt, two_apps[0].db.engine.dialect)
