"""What a transactional step costs: one-step tasks that insert a row, serially.

Two handlers do the same work, a row inserted into a user table of tasker's database:
  plain          on the handler's own connection, in its own transaction (committed before
                 the step's outcome: a retry would insert it again);
  transactional  through `step.connection`, committed with the step's outcome
                 (`StepTemplate(transactional=True)`: exactly once).
Each task is enqueued, then waited for (`app.wait`) before the next, with the app's
in-process worker (`app.start(threads=4)`) and the in-process broker, on SQLite and on
PostgreSQL (127.0.0.1, a fresh database). Reported: tasks/s and p50/p95 of enqueue-to-
complete. Run from the repository root:
  .venv/bin/python bench/transactional.py --n 300
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from tasker import StepTemplate, Tasker, TaskHandler, TaskRequest

INSERT = sa.text("INSERT INTO bench_rows (task_id) VALUES (:t)")
PG = "postgresql+psycopg://root@127.0.0.1:5432"


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/bench.db"
        return
    name = f"bench_tx_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield f"{PG}/{name}"
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def run(kind: str, mode: str, n: int) -> dict[str, Any]:
    with database(kind) as url:
        user = sa.create_engine(url)
        with user.begin() as c:
            c.execute(sa.text("CREATE TABLE bench_rows (task_id BIGINT NOT NULL)"))

        def plain(task: Any, sequence: Any, step: Any) -> None:
            with user.begin() as c:
                c.execute(INSERT, {"t": task.task_id})

        def transactional(task: Any, sequence: Any, step: Any) -> None:
            step.connection.execute(INSERT, {"t": task.task_id})

        handler = transactional if mode == "transactional" else plain
        attrs = {
            "name": "one_row",
            "step_templates": [
                StepTemplate(name="s", handler=handler, transactional=mode == "transactional")
            ],
        }
        app = Tasker(database_url=url)  # the in-process broker
        app.migrate()
        app.register(type("OneRow", (TaskHandler,), attrs))
        app.start(threads=4)
        try:
            latencies = []
            for i in range(20 + n):  # 20 warm-up tasks
                began = time.perf_counter()
                task = app.enqueue(TaskRequest(name="one_row", context={"i": i}))
                done = app.wait(task.task_id, timeout=30)
                assert done.status == "complete", done
                if i >= 20:
                    latencies.append((time.perf_counter() - began) * 1000)
            with user.connect() as c:
                rows = c.execute(sa.text("SELECT count(*) FROM bench_rows")).scalar()
            assert rows == 20 + n, rows
        finally:
            app.close()
            user.dispose()
    latencies.sort()
    return {
        "db": kind,
        "mode": mode,
        "n": n,
        "tasks_per_s": round(n / (sum(latencies) / 1000), 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(latencies[int(len(latencies) * 0.95) - 1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    print("| database | handler | N | tasks/s | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|")
    for kind in kinds:
        for mode in ("plain", "transactional", "plain", "transactional"):  # alternated
            r = run(kind, mode, args.n)
            print(f"| {kind} | {mode} | {r['n']} | {r['tasks_per_s']} | {r['p50_ms']} |"
                  f" {r['p95_ms']} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
