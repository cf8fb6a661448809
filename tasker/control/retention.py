"""Retention: deleting final tasks, with everything of theirs, in bounded batches.

A task is purged when it is final (`complete`, `cancelled`, `resolved_manually`) and
its `completed_at` is older than the cut-off; a task in `error` is kept until a person
retries, resolves or cancels it. Each batch is one short transaction: it picks up to
`batch` such tasks through a partial index over final tasks' `completed_at` (on
PostgreSQL with `FOR UPDATE SKIP LOCKED`, so purges on several workers take different
tasks) and deletes their rows from every child table explicitly, children first, then
the tasks. Only final tasks' rows are touched, which no engine pass or claim writes, so
a purge never waits for the hot rows and never holds them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tasker.store import schema as m
from tasker.store.db import Database

log = logging.getLogger("tasker.retention")

#: Rows of a task that go with it, children before parents (the foreign keys' order).
#: Each is deleted by its `task_id` column, which every one of them indexes.
#: A new table holding rows of a task belongs here.
CHILD_TABLES: Sequence[sa.Table] = (
    m.step_edges,
    m.step_transitions,
    m.task_transitions,
    m.task_annotations,
    m.outbox,
    m.events,
    m.step_items,
    m.limit_holds,
    m.limit_waits,
    m.workflow_steps,
)

DEFAULT_BATCH = 500
T = m.tasks


def _pick(cutoff: datetime, batch: int, postgres: bool) -> sa.Select[Any]:
    # The status filter is the index's own predicate, as text, so the planner uses it.
    q = (
        sa.select(T.c.task_id)
        .where(sa.text(m.FINAL_SQL), T.c.completed_at < cutoff)
        .order_by(T.c.completed_at)
        .limit(batch)
    )
    return q.with_for_update(skip_locked=True) if postgres else q


def purge_batch(db: Database, cutoff: datetime, batch: int = DEFAULT_BATCH) -> int:
    """Delete up to `batch` final tasks completed before `cutoff`, in one transaction.

    Returns:
        How many tasks it deleted.
    """
    with db.write() as conn:
        ids = [int(i) for i in conn.execute(_pick(cutoff, batch, db.is_postgres)).scalars()]
        if not ids:
            return 0
        for table in CHILD_TABLES:
            conn.execute(sa.delete(table).where(table.c.task_id.in_(ids)))
        conn.execute(sa.delete(T).where(T.c.task_id.in_(ids)))
    return len(ids)


def purge(
    db: Database,
    cutoff: datetime,
    batch: int = DEFAULT_BATCH,
    max_batches: int | None = None,
) -> int:
    """Delete every final task completed before `cutoff`, batch after batch.

    Args:
        db: the database.
        cutoff: tasks whose `completed_at` is older go.
        batch: tasks per transaction.
        max_batches: stop after this many batches (the sweeper's bound), None for all.

    Returns:
        How many tasks it deleted.
    """
    total, batches = 0, 0
    while max_batches is None or batches < max_batches:
        deleted = purge_batch(db, cutoff, batch)
        total += deleted
        batches += 1
        if deleted < batch:
            break
    if total:
        log.info("purged %d final task(s) completed before %s", total, cutoff.isoformat())
    return total
