"""How fast the retention purge deletes finished tasks on PostgreSQL, and what it blocks.

1. A fresh database; one diamond task (A -> (B, C) -> D, one annotation) is run to
   completion as the template.
2. Preload: N copies of it (default 100,000) with INSERT ... SELECT in chunks of 10,000:
   each copy has its 4 steps, 4 edges, 3 task transitions, its step transitions and its
   annotation, and completed 60 days ago (so 100,000 tasks are ~2.6 M rows).
3. With `--load`: an in-process worker (`app.start(threads=4)`) and one submitter that
   enqueues a diamond task, waits for it (`app.wait`) and goes on; its tasks/s is
   measured for `--load-seconds` before the purge (baseline) and during the purge.
4. The purge: `tasker.control.retention.purge_batch` again and again (500 tasks per
   transaction, as `app.purge` and the sweeper do), each batch timed.

Reported: tasks purged, wall time, tasks/s, rows/s, the median and the longest batch,
and with --load the load's tasks/s and p50/max latency before and during the purge.
Run from the repository root:
  .venv/bin/python bench/purge.py --n 100000 --load
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.diamond_app import TASK_NAME, BenchDiamond  # noqa: E402
from tasker import Tasker, TaskRequest  # noqa: E402
from tasker.control import retention  # noqa: E402

ADMIN_URL = "postgresql+psycopg://root@127.0.0.1:5432/postgres"
CHUNK = 10_000

_COPY = """
CREATE TEMP TABLE copies AS
SELECT g AS n FROM generate_series(1, :count) AS g;

CREATE TEMP TABLE new_tasks (task_id bigint, n integer);

WITH t AS (
    INSERT INTO tasker_tasks
        (named_task_id, status, context, tags, bypass_steps, initiator, source_system, reason,
         requested_at, created_at, updated_at, completed_at, next_run_at, lease_epoch,
         revision, tx_seq)
    SELECT named_task_id, status, jsonb_build_object('n', c.n + :offset), tags, bypass_steps,
           initiator, source_system, reason, requested_at, created_at, updated_at,
           completed_at - make_interval(secs => c.n + :offset), NULL, lease_epoch, revision,
           tx_seq
    FROM tasker_tasks AS tpl, copies AS c
    WHERE tpl.task_id = :template
    RETURNING task_id, (context ->> 'n')::integer AS n
)
INSERT INTO new_tasks SELECT task_id, n FROM t;

CREATE TEMP TABLE new_steps (task_id bigint, position integer, workflow_step_id bigint);

WITH s AS (
    INSERT INTO tasker_workflow_steps
        (task_id, named_step_id, position, status, retryable, retry_limit, skippable,
         attempts, inputs, results, error, last_attempted_at, next_attempt_at, processed_at,
         created_at, updated_at)
    SELECT nt.task_id, s.named_step_id, s.position, s.status, s.retryable, s.retry_limit,
           s.skippable, s.attempts, s.inputs, s.results, s.error, s.last_attempted_at,
           s.next_attempt_at, s.processed_at, s.created_at, s.updated_at
    FROM new_tasks AS nt, tasker_workflow_steps AS s
    WHERE s.task_id = :template
    RETURNING task_id, position, workflow_step_id
)
INSERT INTO new_steps SELECT task_id, position, workflow_step_id FROM s;

INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id, task_id)
SELECT a.workflow_step_id, b.workflow_step_id, nt.task_id
FROM new_tasks AS nt
CROSS JOIN tasker_workflow_step_edges AS e
JOIN tasker_workflow_steps AS fa ON fa.workflow_step_id = e.from_step_id
JOIN tasker_workflow_steps AS fb ON fb.workflow_step_id = e.to_step_id
JOIN new_steps AS a ON a.task_id = nt.task_id AND a.position = fa.position
JOIN new_steps AS b ON b.task_id = nt.task_id AND b.position = fb.position
WHERE e.task_id = :template;

INSERT INTO tasker_task_transitions (task_id, from_status, to_status, reason, tx_seq, created_at)
SELECT nt.task_id, x.from_status, x.to_status, x.reason, x.tx_seq, x.created_at
FROM new_tasks AS nt, tasker_task_transitions AS x
WHERE x.task_id = :template;

INSERT INTO tasker_workflow_step_transitions
    (workflow_step_id, task_id, from_status, to_status, attempt, reason, details, tx_seq,
     created_at)
SELECT ns.workflow_step_id, ns.task_id, x.from_status, x.to_status, x.attempt, x.reason,
       x.details, x.tx_seq, x.created_at
FROM tasker_workflow_step_transitions AS x
JOIN tasker_workflow_steps AS s ON s.workflow_step_id = x.workflow_step_id
JOIN new_steps AS ns ON ns.position = s.position
WHERE x.task_id = :template;

INSERT INTO tasker_task_annotations (task_id, annotation_type_id, annotation, created_at)
SELECT nt.task_id, a.annotation_type_id, a.annotation, a.created_at
FROM new_tasks AS nt, tasker_task_annotations AS a
WHERE a.task_id = :template;

DROP TABLE copies;
DROP TABLE new_tasks;
DROP TABLE new_steps;
"""

_TABLES = (
    "tasker_tasks",
    "tasker_workflow_steps",
    "tasker_workflow_step_edges",
    "tasker_task_transitions",
    "tasker_workflow_step_transitions",
    "tasker_task_annotations",
)


class Annotated(BenchDiamond):
    """The diamond, with one annotation per task (the purge must delete those too)."""

    def update_annotations(self, task: Any, sequence: Any, steps: Any) -> None:
        if any(s.name == "D" for s in steps):
            task.annotate("bench_done", {"steps": 4})


def preload(app: Tasker, template: int, n: int) -> float:
    started = time.perf_counter()
    for offset in range(0, n, CHUNK):
        count = min(CHUNK, n - offset)
        with app.db.write() as conn:
            for statement in _COPY.split(";\n"):
                if statement.strip():
                    conn.execute(
                        sa.text(statement),
                        {"count": count, "offset": offset, "template": template},
                    )
    with app.db.write() as conn:
        for table in _TABLES:
            conn.execute(sa.text(f"ANALYZE {table}"))
    return time.perf_counter() - started


def row_counts(app: Tasker, task_id: int | None = None) -> dict[str, int]:
    where = "" if task_id is None else f" WHERE task_id = {int(task_id)}"
    with app.db.read() as conn:
        return {
            t: int(conn.execute(sa.text(f"SELECT count(*) FROM {t}{where}")).scalar_one())
            for t in _TABLES
        }


class Load:
    """One submitter: enqueue a diamond task, wait for it, again; latencies recorded."""

    def __init__(self, app: Tasker) -> None:
        self.app = app
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            task = self.app.enqueue(TaskRequest(name=TASK_NAME))
            self.app.wait(task.task_id, timeout=60)
            with self.lock:
                self.latencies.append(time.perf_counter() - started)

    def window(self) -> list[float]:
        with self.lock:
            taken, self.latencies = self.latencies, []
        return taken


def summary(latencies: list[float], seconds: float) -> dict[str, float]:
    if not latencies:
        return {"tasks_per_s": 0.0}
    return {
        "tasks_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000, help="finished tasks to purge")
    p.add_argument("--batch", type=int, default=retention.DEFAULT_BATCH)
    p.add_argument("--load", action="store_true", help="run a worker and a submitter too")
    p.add_argument("--load-seconds", type=float, default=20.0, help="baseline window")
    p.add_argument("--admin-url", default=ADMIN_URL)
    args = p.parse_args()

    name = f"bench_purge_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(args.admin_url).set(database=name).render_as_string(False)
    app = Tasker(database_url=url)
    load: Load | None = None
    try:
        app.migrate()
        app.register(Annotated)
        template = app.enqueue(TaskRequest(name=TASK_NAME)).task_id
        app.run_until_idle()
        assert app.get_task(template).status == "complete"
        with app.db.write() as conn:  # the template is finished long ago, like its copies
            conn.execute(
                sa.text("UPDATE tasker_tasks SET completed_at = :at WHERE task_id = :id"),
                {"at": datetime.now(timezone.utc) - timedelta(days=60), "id": template},
            )
        per_task = sum(row_counts(app, template).values())
        preload_s = preload(app, template, args.n - 1)
        before = row_counts(app)
        result: dict[str, Any] = {
            "n": args.n,
            "batch": args.batch,
            "preload_s": round(preload_s, 1),
            "rows_per_task": per_task,
            "rows_before": before,
        }
        if args.load:
            app.start(threads=4)
            load = Load(app)
            load.thread.start()
            time.sleep(3)  # warm-up
            load.window()
            time.sleep(args.load_seconds)
            result["load_before"] = summary(load.window(), args.load_seconds)
        cutoff = datetime.now(timezone.utc) - timedelta(days=30)
        batches: list[float] = []
        deleted = 0
        started = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            got = retention.purge_batch(app.db, cutoff, args.batch)
            if not got:
                break
            batches.append(time.perf_counter() - t0)
            deleted += got
        wall = time.perf_counter() - started
        if load is not None:
            result["load_during"] = summary(load.window(), wall)
        after = row_counts(app)  # the load's own tasks are recent: they stay
        rows = deleted * per_task
        result.update(
            deleted=deleted,
            purge_s=round(wall, 2),
            tasks_per_s=round(deleted / wall),
            rows_per_s=round(rows / wall),
            batches=len(batches),
            median_batch_ms=round(statistics.median(batches) * 1000, 1),
            longest_batch_ms=round(max(batches) * 1000, 1),
            rows_after=after,
        )
        print(json.dumps(result, indent=2))
    finally:
        if load is not None:
            load.stop.set()
            load.thread.join(60)
        app.close()
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
