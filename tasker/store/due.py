"""Reading due work through its partial index, on PostgreSQL and on SQLite.

The due queries (the sweeper's, `run_until_idle`'s, the paused tasks past their deadline)
each have a partial index over the few rows they look for (`ix_tasker_tasks_due` over live
tasks' `next_run_at`, ...), so their cost is the due rows', not the sleeping ones'.
PostgreSQL's planner picks it. SQLite's, without statistics (an app never runs ANALYZE),
prefers the index over (status, task_id), which walks every live task, sleeping or not:
there the table is named with `INDEXED BY`, which also makes SQLite refuse the query
("no query solution") should its WHERE clause no longer allow the index. The queries
state the index's condition as written (`schema.LIVE_SQL`), not as bound parameters,
which SQLite could not match against it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnClause, TextClause

from tasker.store import schema as m


def tasks_through(index: str, sqlite: bool) -> TextClause:
    """`tasker_tasks` as a FROM clause, read through `index` on SQLite."""
    return sa.text(f"tasker_tasks INDEXED BY {index}" if sqlite else "tasker_tasks")


def col(name: str) -> ColumnClause[Any]:
    """The `tasker_tasks` column `name` (with its type), unqualified: for `tasks_through`."""
    return sa.column(name, m.tasks.c[name].type)
