"""Fan-in stays linear in the children, on SQLite and PostgreSQL.

Each child that ends wakes its parent, whose pass asks what the awaited children are.
That read must cost the same whatever the number of children: with N children there
are up to N wakes, so a read proportional to N makes the fan-in quadratic.

What a read costs is measured, not timed: every statement the parent's passes ran
against the children (a WHERE on `parent_waits`) is recorded with its parameters, and
then run again alone: on SQLite counting the virtual machine's instructions (a progress
handler called at each one), on PostgreSQL the rows its plan nodes read (EXPLAIN
ANALYZE: rows returned plus rows removed by a filter).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from integration_support import task_class

from tasker import StepTemplate, Tasker, TaskRequest


def _register(app: Tasker, n: int) -> None:
    def work(task, sequence, step):  # type: ignore[no-untyped-def]
        return {"n": task.context["n"]}

    def fan_out(task, sequence, step):  # type: ignore[no-untyped-def]
        return {"ids": [step.spawn(TaskRequest(name="child", context={"n": i})) for i in range(n)]}

    app.register(task_class("child", [StepTemplate(name="work", handler=work)]))
    app.register(task_class("parent", [StepTemplate(name="fan_out", handler=fan_out)]))


def _wakes(app: Tasker, n: int) -> list[list[tuple[str, Any]]]:
    """Run a parent awaiting `n` children, one child at a time, the parent woken after
    each; the costs of the statements each wake read its children with (a list per wake).

    The statements are run again right after their wake, before the next child runs:
    on the children as that wake saw them.
    """
    _register(app, n)
    seen: list[tuple[str, Any]] = []

    def on_execute(_c: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
        where = statement.split("WHERE", 1)[1] if "WHERE" in statement else ""
        if statement.lstrip().upper().startswith("SELECT") and "parent_waits" in where:
            seen.append((statement, params))

    t = app.enqueue(TaskRequest(name="parent"))
    app.engine.run_task(t.task_id)  # spawns the children, then awaits them
    children = app.get_task(t.task_id).children
    assert len(children) == n
    wakes = []
    sa.event.listen(app.db.engine, "before_cursor_execute", on_execute)
    try:
        for child in children:
            app.engine.run_task(child)
            seen.clear()
            app.engine.run_task(t.task_id)  # the wake the child's ending sent
            wakes.append([(s, _work(app, s, p)) for s, p in seen])
    finally:
        sa.event.remove(app.db.engine, "before_cursor_execute", on_execute)
    assert app.get_task(t.task_id).status == "complete"
    return wakes


def _sqlite_work(raw: Any, statement: str, params: Any) -> int:
    """The virtual machine instructions SQLite runs for the statement, rows fetched."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    raw.set_progress_handler(tick, 1)
    try:
        raw.execute(statement, params).fetchall()
    finally:
        raw.set_progress_handler(None, 1)
    return count[0]


def _pg_rows_read(plan: Any) -> int:
    """The rows the plan's scans of tasker tables read (EXPLAIN ANALYZE's JSON)."""
    if isinstance(plan, list):
        return sum(_pg_rows_read(p) for p in plan)
    if not isinstance(plan, dict):
        return 0
    own = 0
    if str(plan.get("Relation Name", "")).startswith("tasker_"):
        loops = int(plan.get("Actual Loops", 1))
        own = loops * int(plan.get("Actual Rows", 0)) + int(plan.get("Rows Removed by Filter", 0))
    return own + sum(_pg_rows_read(v) for v in plan.values() if isinstance(v, (dict, list)))


def _work(app: Tasker, statement: str, params: Any) -> int:
    raw = app.db.engine.raw_connection()
    try:
        driver = raw.driver_connection
        if app.db.is_postgres:
            with driver.cursor() as cur:  # type: ignore[union-attr]
                # What an index can do, not what a tiny table's planner prefers
                # (see tests/integration/test_hot_plans.py).
                cur.execute("SET LOCAL enable_seqscan = off")
                cur.execute("ANALYZE tasker_tasks")  # the planner sees how many children
                cur.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", params)
                return _pg_rows_read(cur.fetchone()[0])
        return _sqlite_work(driver, statement, params)
    finally:
        raw.close()


def _per_wake(app: Tasker, n: int) -> tuple[int, int]:
    """(the most work a wake's probes of the children did, how many reads counted them)."""
    wakes = _wakes(app, n)
    probes = [w for wake in wakes for s, w in wake if "count(" not in s.lower()]
    counts = sum(1 for wake in wakes for s, _ in wake if "count(" in s.lower())
    assert len(probes) >= n  # every wake asked
    return max(probes), counts


def test_each_wake_of_a_parent_reads_as_much_for_40_children_as_for_5(make_app):
    """Given a parent step awaiting 5 children, and another awaiting 40, When their
    children end one at a time and each ending wakes the parent, Then the most any wake's
    read of the children costs no more for 40 than for 5 (it probes an index, it does not list
    them), and the children are counted once, by the wake that completes the step."""
    app = make_app()
    few, few_counts = _per_wake(app, 5)
    many, many_counts = _per_wake(make_app(), 40)
    assert many <= few
    assert few_counts == many_counts == 1
