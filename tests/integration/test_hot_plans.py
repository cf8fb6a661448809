"""Every hot PostgreSQL statement can use an index: its cost stays flat as the database grows.

The statements are not listed here: they are recorded while tasker does its hot work
(enqueue, enqueue_many, a keyed repeat, the engine's claims and writes, `get_task`,
`run_until_idle`'s due query, a sweep that re-sends stale outbox rows and due tasks),
so a new or changed statement is checked without a change to this test. Each is then
EXPLAINed with the parameters it ran with, against a database preloaded with finished
tasks (`bench/preload.py`) and holding pending ones.

Why `enable_seqscan = off`: on a test database of a few thousand rows a sequential
scan is often the cheapest plan, and PostgreSQL rightly picks it; that says nothing about
a database of millions. Turning sequential scans off makes them cost 10^10 more, so the
planner picks an index whenever one can serve the statement: a Seq Scan on a tasker
table that remains means that no index can, and the statement's cost grows with the
table. (With sequential scans on, the test would depend on row counts and statistics.)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from integration_support import task_class

from tasker import RetryableError, StepTemplate, Tasker, TaskRequest
from tasker.testing.clock import FakeClock

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.diamond_app import TASK_NAME, make_app
from bench.preload import preload

pytestmark = pytest.mark.postgres

PRELOADED = 3000
_PLANNABLE = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")


def _seq_scans(plan: Any) -> Iterator[str]:
    """The tasker tables a plan (EXPLAIN's JSON) reads with a sequential scan."""
    if isinstance(plan, dict):
        if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name", "").startswith(
            "tasker_"
        ):
            yield plan["Relation Name"]
        for value in plan.values():
            yield from _seq_scans(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from _seq_scans(item)


#: Configuration tables a hot path reads whole (a few rows, cached by the process): the
#: limits of `app.limit`, re-read every `tasker.store.limits.REFRESH` seconds.
WHOLE_TABLE_READS = {"tasker_limits"}


@contextmanager
def recording(app: Tasker) -> Iterator[dict[str, Any]]:
    """Record every statement `app` sends (SQLAlchemy's and the PostgreSQL store's raw
    ones) with the parameters of its first run, while the block runs."""
    recorded: dict[str, Any] = {}

    def on_execute(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        recorded.setdefault(statement, params)

    run = app.store._run  # type: ignore[attr-defined]

    def recording_run(sql: str, params: dict[str, Any], *rest: Any) -> list[Any]:
        recorded.setdefault(sql, params)
        return run(sql, params, *rest)  # type: ignore[no-any-return]

    app.store._run = recording_run  # type: ignore[attr-defined]
    sa.event.listen(app.db.engine, "before_cursor_execute", on_execute)
    try:
        yield recorded
    finally:
        sa.event.remove(app.db.engine, "before_cursor_execute", on_execute)
        app.store._run = run  # type: ignore[attr-defined]


def sequential_scans(pg_url: str, recorded: dict[str, Any], at_least: int) -> list[str]:
    """EXPLAIN each recorded plannable statement with its parameters, sequential scans
    off; the statements that still read a tasker table by a sequential scan."""
    hot = {s: p for s, p in recorded.items() if s.lstrip().upper().startswith(_PLANNABLE)}
    assert len(hot) >= at_least, f"too few statements recorded: {list(hot)}"
    failures = []
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute("SET enable_seqscan = off")
        for sql, recorded_params in hot.items():
            params = recorded_params
            if isinstance(params, list | tuple) and params and isinstance(params[0], dict):
                params = params[0]  # an executemany: one row's parameters plan alike
            row = conn.execute(f"EXPLAIN (FORMAT JSON) {sql}", params or None).fetchone()
            assert row is not None
            scans = sorted(set(_seq_scans(row[0])))
            if "WHERE" not in sql.upper() and set(scans) <= WHOLE_TABLE_READS:
                continue  # reads every row of a small configuration table, on purpose
            if scans:
                failures.append(f"{scans} in:\n{sql.strip()}")
    return failures


def test_every_hot_statement_uses_an_index(pg_url: str, clean_env: None) -> None:
    """Given a database with finished tasks preloaded and some pending ones, when the hot
    statements of enqueue, the engine and the sweeper are recorded and EXPLAINed with
    sequential scans off, then none reads a tasker table by a sequential scan."""
    preload(pg_url, PRELOADED, chunk=1000)
    clock = FakeClock()
    app = make_app(database_url=pg_url, clock=clock)
    try:
        for i in range(20):  # pending tasks, and the catalog warmed up
            app.enqueue(TaskRequest(name=TASK_NAME, context={"wf": f"p{i}"}))
        with recording(app) as recorded:
            app.enqueue(TaskRequest(name=TASK_NAME, context={"wf": "one"}))
            app.enqueue(TaskRequest(name=TASK_NAME, context={"wf": "k"}, idempotency_key="k"))
            app.enqueue(TaskRequest(name=TASK_NAME, context={"wf": "k"}, idempotency_key="k"))
            app.enqueue_many(
                [TaskRequest(name=TASK_NAME, context={"wf": f"m{i}"}) for i in range(3)]
            )
            app.run_until_idle()
            app.get_task(PRELOADED // 2)
            app.history(PRELOADED // 2)
            for i in range(3):  # their messages are "lost": the sweeper finds them
                app.enqueue(TaskRequest(name=TASK_NAME, context={"wf": f"s{i}"}))
            app.dispatch.drain()
            clock.advance(app.settings.sweep_seconds + 1)
            assert app.sweeper.sweep() == 3
    finally:
        app.close()
    failures = sequential_scans(pg_url, recorded, at_least=8)
    assert not failures, "sequential scans on tasker tables:\n\n" + "\n\n".join(failures)


def _composition_app(pg_url: str, clock: FakeClock) -> Tasker:
    """Every part two table at work: events (one early), for_each items (one retried),
    sub-tasks awaited, and a limited system (one task held back for its slot)."""
    failed: set[int] = set()

    def item(task: Any, sequence: Any, step: Any) -> Any:
        if step.item == 2 and task.task_id not in failed:
            failed.add(task.task_id)
            raise RetryableError("item 2 fails once", retry_after=1)
        return {"item": step.item}

    def spawn(task: Any, sequence: Any, step: Any) -> Any:
        return {"children": [step.spawn(TaskRequest(name="hp_child"), key=f"c{i}") for i in (1, 2)]}

    app = Tasker(database_url=pg_url, clock=clock)
    app.register(task_class("hp_child", [StepTemplate(name="work", handler=lambda t, q, s: {})]))
    app.register(
        task_class(
            "hp_composed",
            [
                StepTemplate(
                    name="items", handler=item, for_each=lambda t, q: [1, 2, 3], concurrency=2
                ),
                StepTemplate(name="approval", handler=lambda t, q, s: s.event, wait_for="approved"),
                StepTemplate(name="spawn", handler=spawn),
                StepTemplate(name="bank", handler=lambda t, q, s: {}, dependent_system="bank"),
                StepTemplate(
                    name="join",
                    handler=lambda t, q, s: {},
                    depends_on=["items", "approval", "spawn", "bank"],
                ),
            ],
        )
    )
    app.limit("bank", concurrency=1)
    return app


def test_every_composition_statement_uses_an_index(pg_url: str, clean_env: None) -> None:
    """Given a database with finished tasks preloaded, when two tasks use events (one
    signalled before its step waits), for_each items (one retried), awaited sub-tasks and
    a limited system (one held back for the slot), and their statements (the engine's,
    `signal`'s, the views' and the history's) are recorded and EXPLAINed with sequential
    scans off, then none reads a tasker table by a sequential scan."""
    preload(pg_url, PRELOADED, chunk=1000)
    clock = FakeClock()
    app = _composition_app(pg_url, clock)
    try:
        with recording(app) as recorded:
            early, late = (app.enqueue(TaskRequest(name="hp_composed")) for _ in range(2))
            app.signal(early.task_id, "approved", {"by": "early"})
            app.run_until_idle()
            waiting = app.get_task(late.task_id)  # waiting_for reads events, items, children
            assert waiting.status == "in_progress", waiting
            app.signal(late.task_id, "approved", {"by": "late"})
            for _ in range(10):
                clock.advance(2)
                app.run_until_idle()
                views = [app.get_task(t.task_id) for t in (early, late)]
                if all(v.status == "complete" for v in views):
                    break
            assert [v.status for v in views] == ["complete", "complete"], views
            for t in (early, late):
                app.history(t.task_id)
    finally:
        app.close()
    tables = " ".join(recorded)
    for table in ("tasker_events", "tasker_step_items", "tasker_limit_holds", "parent_task_id"):
        assert table in tables, f"no statement touched {table}: the scenario did not run it"
    failures = sequential_scans(pg_url, recorded, at_least=15)
    assert not failures, "sequential scans on tasker tables:\n\n" + "\n\n".join(failures)
