"""The due-work queries use their partial indexes on SQLite too.

SQLite uses a partial index only when the query's WHERE clause holds the index's
condition as written, with constants: `status IN (?, ?)` with bound parameters does not
imply `status IN ('pending', 'in_progress')`, and the query scans the whole table; and
without statistics it prefers the (status, task_id) index, which walks every live task,
sleeping or not (see `tasker.store.due`). So the
statements that find due work (a sweep, `run_until_idle`'s due query, the paused tasks
past their deadline, the owed `on_finish` calls) are recorded while tasker runs them, and
each is EXPLAINed (`EXPLAIN QUERY PLAN`) with the parameters it ran with: none may scan
`tasker_tasks`. (PostgreSQL's plans are checked by `test_hot_plans.py`.)
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from integration_support import task_class

from tasker import StepTemplate, Tasker, TaskRequest
from tasker.control.sweeper import Sweeper
from tasker.testing.clock import FakeClock

#: Conditions of the partial indexes over due work.
_DUE = ("next_run_at <=", "deadline_at <=", "finish_due_at <=")
#: How a due-work statement may read tasker_tasks: its partial index, or by task id.
_ALLOWED = tuple(
    f"SEARCH tasker_tasks USING {how} "
    for how in (
        "INDEX ix_tasker_tasks_due",
        "INDEX ix_tasker_tasks_paused_deadline_at",
        "INDEX ix_tasker_tasks_finish_due_at",
        "COVERING INDEX ix_tasker_tasks_finish_due_at",
        "INTEGER PRIMARY KEY",
    )
)


def _pause(task, sequence, step):  # type: ignore[no-untyped-def]
    task.pause("for a person")


def _ok(task, sequence, step):  # type: ignore[no-untyped-def]
    return {}


def _scans(app: Tasker, recorded: list[tuple[str, Any]]) -> dict[str, list[str]]:
    """Each recorded due-work statement whose plan reads tasker_tasks otherwise than
    through its partial index or by task id (a scan of the table or of an index over
    every live task), with that plan."""
    found = {}
    with app.db.engine.connect() as conn:
        for statement, params in recorded:
            plan = [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)]
            tasks = [p for p in plan if p.split(" ")[1:2] == ["tasker_tasks"]]
            if not tasks or not all(p.startswith(_ALLOWED) for p in tasks):
                found[statement] = plan
    return found


def test_the_due_work_queries_use_their_partial_indexes_on_sqlite(
    sqlite_url: str, clock: FakeClock, clean_env: None
) -> None:
    """Given tasks sleeping, a paused task with a deadline and a finished task, When a sweep
    and run_until_idle look for due work, Then every statement they sent that finds due
    work searches its partial index (or reads by task id): none scans tasker_tasks or an
    index over every live task."""
    app = Tasker(database_url=sqlite_url, clock=clock)
    app.migrate()
    sleeper = task_class(
        "sleeper",
        [
            StepTemplate(name="a", handler=_ok),
            StepTemplate(name="b", handler=_ok, depends_on=["a"], wait=timedelta(days=2)),
        ],
    )
    paused = task_class("paused_one", [StepTemplate(name="p", handler=_pause)])
    paused.timeout = timedelta(hours=1)  # type: ignore[attr-defined]
    app.register(sleeper)
    app.register(paused)
    for _ in range(3):
        app.enqueue(TaskRequest(name="sleeper"))
    app.enqueue(TaskRequest(name="paused_one"))
    app.run_until_idle()
    recorded: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if any(due in statement for due in _DUE):
            recorded.append((statement, params))

    sa.event.listen(app.db.engine, "before_cursor_execute", record)
    clock.advance(timedelta(days=3))
    sweeper = Sweeper(app.db, lambda task_id: None, clock, 5.0, 30.0)
    assert sweeper.sweep() == 3
    app.run_until_idle()
    sa.event.remove(app.db.engine, "before_cursor_execute", record)
    app.close()

    texts = " ".join(s for s, _ in recorded)
    assert all(due in texts for due in _DUE), recorded
    assert _scans(app, recorded) == {}
