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
import os
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
    """Every distinct statement sent that reads tasker_tasks or the outbox for due work."""

    def __init__(self, engine: sa.Engine) -> None:
        self.statements: dict[str, Any] = {}
        self._engine = engine
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if any(due in statement for due in _DUE) and statement not in self.statements:
            self.statements[statement] = params

    def close(self) -> None:
        sa.event.remove(self._engine, "before_cursor_execute", self._seen)


#: The conditions of the due-work queries (tasks, paused deadlines, owed callbacks, outbox,
#: schedules).
_DUE = ("next_run_at <=", "deadline_at <=", "finish_due_at <=", "deliver_at <=", "next_tick <=")


def _explain(app: Tasker, capture: _Capture) -> dict[str, list[str]]:
    """The plan of each captured statement, run again with its parameters: `EXPLAIN ANALYZE`
    on PostgreSQL (in a transaction rolled back: some are updates), `EXPLAIN QUERY PLAN` on
    SQLite. Keyed by the statement's first line and its WHERE clause, shortened."""
    assert capture.statements, "the sweep sent no due query"
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if app.db.is_postgres else "EXPLAIN QUERY PLAN "
    plans: dict[str, list[str]] = {}
    with app.db.engine.connect() as conn:
        for statement, params in capture.statements.items():
            trans = conn.begin()
            try:
                rows = conn.exec_driver_sql(prefix + statement, params).all()
            finally:
                trans.rollback()
            key = " ".join(statement.split())
            key = key[:60] + " ... " + key[key.find("WHERE") :][:110]
            plans[key] = [str(r[-1]) for r in rows]
    return plans


def _backend_cpu(app: Tasker) -> dict[int, float]:
    """PostgreSQL: CPU seconds (user + system) so far of each server process serving the
    bench's database (its own, so no other session's), read from /proc on this machine."""
    if not app.db.is_postgres:
        return {}
    with app.db.engine.connect() as conn:
        pids = conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        ).scalars()
        found = {}
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[int(pid)] = (int(fields[11]) + int(fields[12])) / _TICKS
    return found


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_since(app: Tasker, before: dict[int, float]) -> float:
    after = _backend_cpu(app)
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _timed(fn: Any, app: Tasker, rounds: int, between: Any) -> dict[str, float]:
    """`fn()` `rounds` times: median and p90 wall ms, and the mean CPU ms per call of this
    process and (PostgreSQL) of the database's server processes."""
    walls = []
    cpu0, server0 = time.process_time(), _backend_cpu(app)
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        between()
    cpu, server = time.process_time() - cpu0, _cpu_since(app, server0)
    walls.sort()
    found = {
        "wall_ms_p50": round(statistics.median(walls) * 1000, 2),
        "wall_ms_p90": round(walls[int(len(walls) * 0.9)] * 1000, 2),
        "cpu_ms": round(cpu / rounds * 1000, 2),
    }
    if app.db.is_postgres:
        found["server_cpu_ms"] = round(server / rounds * 1000, 2)
    return found


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
                with app.db.engine.connect() as conn:
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                    conn.exec_driver_sql("VACUUM ANALYZE")
            view = app.get_task(real[0])
            assert view.steps["remind"].waiting_for == "time", view
            sent: list[int] = []
            sweeper = Sweeper(
                app.db,
                sent.append,
                clock,
                sweep_seconds=app.settings.sweep_seconds,
                lease_seconds=app.settings.lease_seconds,
            )
            # Nothing due: what the sleeping tasks alone cost a sweep and its chores.
            idle = _timed(
                lambda: (sweeper.sweep(), app.housekeeping()), app, 30, lambda: clock.advance(1)
            )
            assert not sent, sent
            clock.advance(2 * DAY + 1 + app.settings.sweep_seconds)  # due, past the grace
            capture = _Capture(app.db.engine)

            def one() -> None:
                count = sweeper.sweep()
                assert count == due, (count, due)
                app.housekeeping()

            busy = _timed(one, app, 30, lambda: clock.advance(app.settings.lease_seconds + 0.001))
            cpu0, server0, wall0 = time.process_time(), _backend_cpu(app), time.perf_counter()
            passes = app.run_until_idle()
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            server = _cpu_since(app, server0)
            capture.close()
            assert passes >= due, (passes, due)
            after = app.get_task(real[0])
            assert after.steps["remind"].status == "complete", after
            found: dict[str, Any] = {
                "backend": backend,
                "sleeping": sleeping,
                "due": due,
                "preload_s": round(preload_s, 1),
                "sweep_nothing_due": idle,
                "sweep_due": busy,
                "due_passes": passes,
                "engine_cpu_ms_per_due_task": round(cpu / due * 1000, 2),
                "engine_wall_ms_per_due_task": round(wall / due * 1000, 2),
            }
            if app.db.is_postgres:
                found["server_cpu_ms_per_due_task"] = round(server / due * 1000, 2)
            found["due_query_plans"] = _explain(app, capture)
            return found
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
