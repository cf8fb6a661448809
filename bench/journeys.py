"""Long-running journeys at scale: what sleeping tasks cost, and journeys driven through waits.

`sweep`: a database holding S sleeping tasks (default 1,000 and 100,000), plus D real
journeys that fall due together (default 200). Reported per S:
- the sweep: the median and p90 wall time of `Sweeper.sweep()` over 30 sweeps, each seeing
  the D due tasks again (the fake clock moves a lease period between sweeps, so each sweep
  re-sends all D: the worst case for the due query), and the plan of the due-work query
  (the statement the sweeper really sent, captured with a SQLAlchemy hook, then EXPLAINed
  with its parameters);
- the engine's CPU per due task: the D journeys' next step falls due; `run_until_idle()`
  finds them (through the same due index) and runs one pass each; this process's CPU time
  (`time.process_time`, which on SQLite includes the database's own work; on PostgreSQL the
  server's CPU is not in it) divided by D, and the wall time.
The sleeping tasks are journeys enqueued with `enqueue_many` and then put to sleep by one
UPDATE each per chunk, as a pass that met a wait leaves them: `next_run_at` 3-30 days
ahead, no lease, no outbox row (their steps stay as enqueued: nothing reads them).

`journeys`: N journeys of 3 steps (welcome; remind, `wait=` 2 days after welcome; finish,
`after=` 15 days), enqueued by `enqueue_many`, then driven through their waits on a
FakeClock: `run_until_idle()`, advance 2 days, `run_until_idle()`, advance 13 days,
`run_until_idle()`. Reported: enqueue time, run time, steps/s (3 N / run time), CPU.

Embedded (no broker, no worker processes), on a SQLite file or a fresh PostgreSQL
database. Run from the repository root:
  .venv/bin/python bench/journeys.py sweep --sleeping 1000 100000 --backend sqlite postgres
  .venv/bin/python bench/journeys.py journeys --n 10000 --backend sqlite postgres
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasker import StepTemplate, Tasker, TaskHandler, TaskRequest  # noqa: E402
from tasker.control.sweeper import Sweeper  # noqa: E402
from tasker.store import schema as m  # noqa: E402
from tasker.testing.clock import FakeClock  # noqa: E402

PG_ADMIN = "postgresql+psycopg://root@127.0.0.1:5432/postgres"
CHUNK = 5_000
DAY = 86_400.0


def _noop(task: Any, sequence: Any, step: Any) -> None:
    return None


class Journey(TaskHandler):
    """welcome -> remind (2 days after) -> finish (not before day 15)."""

    name = "bench_journey"
    step_templates = [  # noqa: RUF012
        StepTemplate(name="welcome", handler=_noop),
        StepTemplate(name="remind", handler=_noop, depends_on=["welcome"], wait=2 * DAY),
        StepTemplate(name="finish", handler=_noop, depends_on=["remind"], after=15 * DAY),
    ]


@contextmanager
def _database(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/bench.db"
        return
    name = f"tasker_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://root@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _app(url: str, clock: FakeClock) -> Tasker:
    app = Tasker(database_url=url, clock=clock)
    app.migrate()
    app.register(Journey)
    return app


def _enqueue(app: Tasker, n: int) -> list[int]:
    ids: list[int] = []
    for start in range(0, n, CHUNK):
        batch = [
            TaskRequest(name=Journey.name, context={"n": i})
            for i in range(start, min(n, start + CHUNK))
        ]
        ids.extend(t.task_id for t in app.enqueue_many(batch))
    return ids


def _put_to_sleep(app: Tasker, ids: list[int]) -> None:
    """As a pass that met a wait leaves a task: due days ahead, no lease, no outbox row."""
    now = app.now()
    T = m.tasks
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        with app.db.write() as conn:
            for offset in range(0, len(chunk), 1000):  # due 3-30 days ahead, in groups
                due = now + timedelta(days=3 + (start + offset) % 27, seconds=offset)
                conn.execute(
                    sa.update(T)
                    .where(T.c.task_id.in_(chunk[offset : offset + 1000]))
                    .values(
                        next_run_at=due, lease_owner=None, lease_expires_at=None, dispatched_at=None
                    )
                )
            conn.execute(sa.delete(m.outbox).where(m.outbox.c.task_id.in_(chunk)))
    app.dispatch.drain()  # the in-process queue's messages of the sleepers: gone


class _Capture:
    """The last statement (and parameters) sent that reads the due index."""

    def __init__(self, engine: sa.Engine) -> None:
        self.statement: str | None = None
        self.params: Any = None
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if "next_run_at <=" in statement and "dispatched_at" in statement:
            self.statement, self.params = statement, params


def _explain(app: Tasker, capture: _Capture) -> list[str]:
    assert capture.statement is not None, "the sweep sent no due query"
    prefix = "EXPLAIN ANALYZE " if app.db.is_postgres else "EXPLAIN QUERY PLAN "
    with app.db.engine.connect() as conn:
        rows = conn.exec_driver_sql(prefix + capture.statement, capture.params).all()
    return [" ".join(str(c) for c in r) for r in rows]


def sweep(backend: str, sleeping: int, due: int) -> dict[str, Any]:
    clock = FakeClock()
    with _database(backend) as url:
        app = _app(url, clock)
        try:
            began = time.perf_counter()
            _put_to_sleep(app, _enqueue(app, sleeping))
            real = _enqueue(app, due)
            app.run_until_idle()  # the real journeys run welcome, then sleep for 2 days
            preload_s = time.perf_counter() - began
            if app.db.is_postgres:  # as autovacuum would; SQLite is left as users leave it
                with app.db.write() as conn:
                    conn.exec_driver_sql("ANALYZE")
            view = app.get_task(real[0])
            assert view.steps["remind"].waiting_for == "time", view
            clock.advance(2 * DAY + 1)
            sent: list[int] = []
            capture = _Capture(app.db.engine)
            sweeper = Sweeper(
                app.db,
                sent.append,
                clock,
                sweep_seconds=app.settings.sweep_seconds,
                lease_seconds=app.settings.lease_seconds,
            )
            clock.advance(app.settings.sweep_seconds)  # the sweeper's grace period
            times = []
            for _ in range(30):
                t0 = time.perf_counter()
                count = sweeper.sweep()
                times.append(time.perf_counter() - t0)
                assert count == due, (count, due)
                clock.advance(app.settings.lease_seconds + 0.001)
            plan = _explain(app, capture)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            passes = app.run_until_idle()
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            assert passes >= due, (passes, due)
            after = app.get_task(real[0])
            assert after.steps["remind"].status == "complete", after
            times.sort()
            return {
                "backend": backend,
                "sleeping": sleeping,
                "due": due,
                "preload_s": round(preload_s, 1),
                "sweep_ms_p50": round(statistics.median(times) * 1000, 2),
                "sweep_ms_p90": round(times[int(len(times) * 0.9)] * 1000, 2),
                "due_passes": passes,
                "engine_cpu_ms_per_due_task": round(cpu / due * 1000, 2),
                "engine_wall_ms_per_due_task": round(wall / due * 1000, 2),
                "due_query_plan": plan,
            }
        finally:
            app.close()


def journeys(backend: str, n: int) -> dict[str, Any]:
    clock = FakeClock()
    with _database(backend) as url:
        app = _app(url, clock)
        try:
            t0 = time.perf_counter()
            ids = _enqueue(app, n)
            enqueue_s = time.perf_counter() - t0
            cpu0, wall0 = time.process_time(), time.perf_counter()
            passes = app.run_until_idle()
            clock.advance(2 * DAY + 1)
            passes += app.run_until_idle()
            clock.advance(13 * DAY)
            passes += app.run_until_idle()
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            with app.db.read() as conn:
                done = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(m.tasks)
                    .where(m.tasks.c.status == "complete")
                ).scalar()
            assert done == len(ids) == n, (done, n)
            steps = 3 * n
            return {
                "backend": backend,
                "journeys": n,
                "enqueue_s": round(enqueue_s, 1),
                "run_s": round(wall, 1),
                "passes": passes,
                "steps_per_s": round(steps / wall, 1),
                "cpu_ms_per_step": round(cpu / steps * 1000, 2),
            }
        finally:
            app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sweep")
    s.add_argument("--sleeping", type=int, nargs="+", default=[1000, 100_000])
    s.add_argument("--due", type=int, default=200)
    s.add_argument("--backend", nargs="+", default=["sqlite", "postgres"])
    j = sub.add_parser("journeys")
    j.add_argument("--n", type=int, default=10_000)
    j.add_argument("--backend", nargs="+", default=["sqlite", "postgres"])
    args = parser.parse_args()
    for backend in args.backend:
        if args.what == "sweep":
            for count in args.sleeping:
                print(json.dumps(sweep(backend, count, args.due)), flush=True)
        else:
            print(json.dumps(journeys(backend, args.n)), flush=True)


if __name__ == "__main__":
    main()
