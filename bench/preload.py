"""Fill a PostgreSQL database with N finished diamond tasks, fast, for "cost flat as the
database grows".

One template task is enqueued and run to completion by tasker itself (so every row is
what tasker writes: 4 steps, 4 edges, 15 history rows). Then the template is copied N
times with `INSERT ... SELECT ... FROM generate_series`, one transaction per chunk of
`--chunk` tasks and one statement per table, on ids reserved from the tables'
sequences, so the copies' steps, edges and history point at the copies. Columns are
taken from `tasker.store.schema`, so a new column is copied without a change here. The
copies' times go back one second per copy (the `completed_at` index sees a spread).

By default the copy runs with `session_replication_role = replica` (needs a
superuser): foreign-key triggers do not fire, which is sound here because the rows are
consistent by construction, and several times faster. `--checked` keeps the checks.
Then VACUUM ANALYZE, so the planner and the visibility map see the real tables.

    .venv/bin/python bench/preload.py --database-url postgresql://root@127.0.0.1/big --n 1000000

The database is migrated first (it may already hold tasks: they are kept).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.diamond_app import TASK_NAME, make_app  # noqa: E402
from tasker import TaskRequest  # noqa: E402
from tasker.store import schema as m  # noqa: E402

_STEP_REFS = ("workflow_step_id", "from_step_id", "to_step_id")
#: The tables copied, parents first, and the tasks' time columns that are spread out.
_TABLES = (
    m.tasks,
    m.workflow_steps,
    m.step_edges,
    m.task_transitions,
    m.step_transitions,
    m.task_annotations,
)
_SPREAD = ("requested_at", "created_at", "updated_at", "completed_at", "next_run_at")


def _copy_sql(table: sa.Table) -> str:
    """`INSERT ... SELECT` of the template's rows of `table`, once per g in 1..size.

    Parameters: tpl (the template task), tbase and sbase (the first reserved task and
    step ids), k (steps per task), size (copies). `ts` maps each template step to its
    rank k, so step (g, k) gets id sbase + (g - 1) * k + rank.
    """
    pk = [c.name for c in table.primary_key.columns]
    # A serial of the table's own (history, annotations) takes its default on each copy.
    own_pk = pk[0] if len(pk) == 1 and pk[0] not in (*_STEP_REFS, "task_id") else None
    columns, values = [], []
    for c in table.columns:
        if table is m.tasks and c.name == "task_id":
            expr = "%(tbase)s + g - 1"
        elif table is m.workflow_steps and c.name == "workflow_step_id":
            expr = "%(sbase)s + (g - 1) * %(k)s + ts.rank"
        elif c.name == own_pk:
            continue
        elif c.name == "task_id":
            expr = "%(tbase)s + g - 1"
        elif c.name in _STEP_REFS:
            expr = f"%(sbase)s + (g - 1) * %(k)s + r_{c.name}.rank"
        elif table is m.tasks and c.name in _SPREAD:
            expr = f"src.{c.name} - make_interval(secs => g)"
        else:
            expr = f"src.{c.name}"
        columns.append(c.name)
        values.append(expr)
    joins = ""
    if table is m.workflow_steps:
        joins = " JOIN ts ON ts.workflow_step_id = src.workflow_step_id"
    else:
        for ref in _STEP_REFS:
            if ref in table.c and ref != own_pk:
                joins += f" JOIN ts AS r_{ref} ON r_{ref}.workflow_step_id = src.{ref}"
    return f"""
WITH ts AS (
    SELECT workflow_step_id, row_number() OVER (ORDER BY workflow_step_id) - 1 AS rank
    FROM {m.workflow_steps.name} WHERE task_id = %(tpl)s
)
INSERT INTO {table.name} ({", ".join(columns)})
SELECT {", ".join(values)}
FROM {table.name} AS src{joins}, generate_series(1, %(size)s) AS g
WHERE src.task_id = %(tpl)s
ORDER BY g
"""


def _reserve(cur: psycopg.Cursor[Any], table: str, column: str, count: int) -> int:
    """Take `count` consecutive ids from the sequence of `table.column`; the first."""
    seq = cur.execute("SELECT pg_get_serial_sequence(%s, %s)", (table, column)).fetchone()
    assert seq is not None and seq[0] is not None, f"{table}.{column} has no sequence"
    row = cur.execute(
        "SELECT setval(%(s)s, nextval(%(s)s) + %(n)s - 1) - %(n)s + 1", {"s": seq[0], "n": count}
    ).fetchone()
    assert row is not None
    return int(row[0])


def template_task(url: str) -> int:
    """Migrate, then enqueue one diamond and run it to completion in this process."""
    app = make_app(database_url=url)
    try:
        app.migrate()
        task = app.enqueue(TaskRequest(name=TASK_NAME, context={"wf": "preload"}))
        app.run_until_idle()
        status = app.get_task(task.task_id).status
        if status != "complete":
            raise RuntimeError(f"the template task ended {status}")
        return task.task_id
    finally:
        app.close()


def preload(
    url: str, n: int, chunk: int = 100_000, checked: bool = False, vacuum: bool = True
) -> dict[str, Any]:
    """Add `n` finished copies of a template diamond to the database at `url`.

    Returns:
        What was done: the template id, the rows per table afterwards, the seconds.
    """
    began = time.perf_counter()
    tpl = template_task(url)
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    statements = {t.name: _copy_sql(t) for t in _TABLES}
    with psycopg.connect(plain) as conn, conn.cursor() as cur:
        k_row = cur.execute(
            f"SELECT count(*) FROM {m.workflow_steps.name} WHERE task_id = %s", (tpl,)
        ).fetchone()
        assert k_row is not None
        k = int(k_row[0])
        conn.commit()
        done = 0
        while done < n:
            size = min(chunk, n - done)
            with conn.transaction():
                if not checked:
                    cur.execute("SET LOCAL session_replication_role = replica")
                params = {
                    "tpl": tpl,
                    "size": size,
                    "k": k,
                    "tbase": _reserve(cur, m.tasks.name, "task_id", size),
                    "sbase": _reserve(cur, m.workflow_steps.name, "workflow_step_id", size * k),
                }
                for sql in statements.values():
                    cur.execute(sql, params)
            done += size
            print(f"  {done}/{n} tasks, {time.perf_counter() - began:.0f} s", flush=True)
        copied = time.perf_counter() - began
    if vacuum:
        with psycopg.connect(plain, autocommit=True) as conn:
            for t in _TABLES:
                conn.execute(f"VACUUM ANALYZE {t.name}")
    with psycopg.connect(plain) as conn:
        counts = {
            t.name: int(conn.execute(f"SELECT count(*) FROM {t.name}").fetchone()[0])  # type: ignore[index]
            for t in _TABLES
        }
    return {
        "template_task_id": tpl,
        "copies": n,
        "rows": counts,
        "copy_seconds": round(copied, 1),
        "total_seconds": round(time.perf_counter() - began, 1),
        "foreign_keys_checked": checked,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url", required=True, help="a PostgreSQL URL")
    p.add_argument("--n", type=int, default=1_000_000, help="finished tasks to add")
    p.add_argument("--chunk", type=int, default=100_000, help="tasks per transaction")
    p.add_argument("--checked", action="store_true", help="keep the foreign-key checks")
    p.add_argument("--no-vacuum", action="store_true", help="skip VACUUM ANALYZE at the end")
    args = p.parse_args()
    result = preload(args.database_url, args.n, args.chunk, args.checked, not args.no_vacuum)
    print(result)


if __name__ == "__main__":
    main()
