"""Collections and sub-tasks at scale: a for_each step over N no-op items, and one step
spawning and awaiting 1,000 sub-tasks.

Each measurement runs in a fresh child process (so its peak RSS is its own), embedded:
the app's engine runs the task in that process with `run_until_idle()` (no broker, no
worker processes), on a SQLite file or a fresh PostgreSQL database.

Reported per run:
- items: seconds from enqueue to the task complete, items/s, statements and commits per
  item (every statement tasker sent, counted by a SQLAlchemy `before_cursor_execute`
  hook, an `executemany` counting once: psycopg pipelines it; PostgreSQL's hot path sends
  raw driver statements, which are counted too), and the process's peak RSS;
- spawn: seconds from enqueue to the parent complete, for one step spawning N children
  it waits for (each child one no-op step).

Run from the repository root (short runs):
  .venv/bin/python bench/compose.py items --n 1000 10000 --backend sqlite postgres
  .venv/bin/python bench/compose.py items --n 10000 --concurrency 32
  .venv/bin/python bench/compose.py spawn --n 1000 --backend sqlite postgres
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

PG_ADMIN = "postgresql+psycopg://root@127.0.0.1:5432/postgres"


def _noop(task: Any, sequence: Any, step: Any) -> None:
    return None


def _app(url: str) -> Any:
    from tasker import StepTemplate, Tasker, TaskHandler, TaskRequest

    app = Tasker(database_url=url)
    app.migrate()
    n = int(os.environ["BENCH_N"])
    concurrency = int(os.environ.get("BENCH_CONCURRENCY") or 0) or None

    class Items(TaskHandler):
        name = "bench_items"
        step_templates = [  # noqa: RUF012
            StepTemplate(
                name="each",
                handler=_noop,
                for_each=lambda t, s: list(range(n)),
                concurrency=concurrency,
            )
        ]

    def fan_out(task: Any, sequence: Any, step: Any) -> None:
        for i in range(n):
            step.spawn(TaskRequest(name="bench_child", context={"i": i}))

    class Child(TaskHandler):
        name = "bench_child"
        step_templates = [StepTemplate(name="c", handler=_noop)]  # noqa: RUF012

    class Parent(TaskHandler):
        name = "bench_parent"
        step_templates = [StepTemplate(name="fan_out", handler=fan_out)]  # noqa: RUF012

    for cls in (Items, Child, Parent):
        app.register(cls)
    return app


def child(kind: str, url: str) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    import sqlalchemy as sa

    from tasker import TaskRequest

    app = _app(url)
    counts = {"statements": 0, "commits": 0}

    @sa.event.listens_for(app.db.engine, "before_cursor_execute")
    def _count(*_: Any) -> None:
        counts["statements"] += 1

    @sa.event.listens_for(app.db.engine, "commit")
    def _commit(*_: Any) -> None:
        counts["commits"] += 1

    raw = _count_raw(app)
    name = "bench_items" if kind == "items" else "bench_parent"
    began = time.perf_counter()
    t = app.enqueue(TaskRequest(name=name))
    while app.get_task(t.task_id).status not in ("complete", "error"):
        if not app.run_until_idle():  # nothing ran: a pass failed (logged), or nothing is due
            raise SystemExit(f"task {t.task_id} stopped progressing: {app.get_task(t.task_id)}")
    elapsed = time.perf_counter() - began
    view = app.get_task(t.task_id)
    n = int(os.environ["BENCH_N"])
    statements = counts["statements"] + raw["n"]
    out = {
        "kind": kind,
        "backend": "postgres" if app.db.is_postgres else "sqlite",
        "n": n,
        "concurrency": os.environ.get("BENCH_CONCURRENCY") or "default (8)",
        "status": view.status,
        "seconds": round(elapsed, 2),
        "per_s": round(n / elapsed, 1),
        "statements_per_item": round(statements / n, 3),
        "commits_per_item": round((counts["commits"] + raw["n"]) / n, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    app.close()
    return out


def _count_raw(app: Any) -> dict[str, int]:
    """Count the PostgreSQL raw autocommit statements (one commit each): the engine's
    hot path and the item batches."""
    seen = {"n": 0}
    if not app.db.is_postgres:
        return seen
    store = app.engine._store
    run = store._run

    def counted(sql: str, params: dict[str, Any], *rest: Any) -> list[Any]:
        seen["n"] += 1
        return run(sql, params, *rest)  # type: ignore[no-any-return]

    store._run = counted
    from tasker.engine import items as runner
    from tasker.store import items as stored

    write = stored.write

    def counted_items(*args: Any, **kwargs: Any) -> Any:
        seen["n"] += 1  # one statement on PostgreSQL (`tasker.store.items._write_pg`)
        return write(*args, **kwargs)

    runner.stored.write = counted_items  # type: ignore[attr-defined]
    return seen


def _database(backend: str, folder: str) -> tuple[str, Any]:
    if backend == "sqlite":
        return f"sqlite:///{folder}/bench-{uuid.uuid4().hex[:8]}.db", None
    import sqlalchemy as sa

    name = f"bench_compose_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return f"postgresql+psycopg://root@127.0.0.1:5432/{name}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["items", "spawn"])
    parser.add_argument("--n", type=int, nargs="+", default=[1000])
    parser.add_argument("--backend", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--concurrency", type=int, default=0, help="items: 0 = default")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        logging.basicConfig(level=logging.WARNING)  # a failing pass says why on stderr
        print(json.dumps(child(args.kind, args.child)))
        return
    with tempfile.TemporaryDirectory() as folder:
        for backend in args.backend:
            for n in args.n:
                url, drop = _database(backend, folder)
                try:
                    env = {
                        **os.environ,
                        "BENCH_N": str(n),
                        "BENCH_CONCURRENCY": str(args.concurrency or ""),
                        "PYTHONPATH": os.getcwd(),
                    }
                    done = subprocess.run(
                        [sys.executable, __file__, args.kind, "--child", url],
                        env=env,
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                    if done.returncode != 0:
                        print(done.stderr[-3000:], file=sys.stderr)
                        continue
                    print(done.stdout.strip().splitlines()[-1], flush=True)
                finally:
                    if drop is not None:
                        drop()


if __name__ == "__main__":
    main()
