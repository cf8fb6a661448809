"""The items of `for_each` steps in `tasker_step_items`: one row per item.

Every write of the item runner is one short transaction fenced by the task's lease (the
task row must still be `in_progress` under the runner's lease epoch and owner; on
PostgreSQL the row is share-locked, so a claim waits for the write) and carries a
batch: the outcomes recorded since the last write, the attempts it starts, and the
history rows of the items that failed. Each batch is a constant number of statements
whatever its size (executemany; psycopg pipelines it), so round trips per item fall
as batches grow. The item list is inserted once, in chunks, in one such transaction.

The same SQLAlchemy Core statements serve SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasker.core.clock import maybe_utc
from tasker.core.items import ERROR, PENDING, Item
from tasker.core.states import Status
from tasker.errors import LeaseLostError
from tasker.store import schema as m
from tasker.store.audit import StepChange, step_change_rows, write_step_changes
from tasker.store.db import Database
from tasker.store.lease import Lease

IT, T = m.step_items, m.tasks
_IN_PROGRESS = Status.IN_PROGRESS
#: Item rows per INSERT statement when the list is stored.
CHUNK = 1000

_UPDATE = (
    sa.update(IT)
    .where(IT.c.workflow_step_id == sa.bindparam("p_step"), IT.c.item_index == sa.bindparam("p_i"))
    .values(
        status=sa.bindparam("p_status"),
        attempts=sa.bindparam("p_attempts"),
        error=sa.bindparam("p_error", type_=m.Json),
        next_attempt_at=sa.bindparam("p_next", type_=m.When),
        results=sa.bindparam("p_results", type_=m.Json),
        updated_at=sa.bindparam("p_now", type_=m.When),
    )
)


def _fence(conn: Connection, lease: Lease, postgres: bool) -> None:
    """Check (and on PostgreSQL share-lock) that the lease is still ours.

    Raises:
        LeaseLostError: the task is no longer in progress under this lease.
    """
    q = sa.select(T.c.task_id).where(
        T.c.task_id == lease.task_id,
        T.c.lease_epoch == lease.epoch,
        T.c.lease_owner == lease.owner,
        T.c.status == "in_progress",
    )
    if conn.execute(q.with_for_update(read=True) if postgres else q).first() is None:
        raise LeaseLostError(f"task {lease.task_id}: lease epoch {lease.epoch} is no longer ours")


def load(db: Database, step_id: int) -> dict[int, Item]:
    """The stored items of a step (without their values), by index; empty if none."""
    with db.read() as conn:
        rows = conn.execute(
            sa.select(IT.c.item_index, IT.c.status, IT.c.attempts, IT.c.error, IT.c.next_attempt_at)
            .where(IT.c.workflow_step_id == step_id)
            .order_by(IT.c.item_index)
        ).all()
    return {
        int(r.item_index): Item(
            int(r.item_index), r.status, int(r.attempts), r.error, maybe_utc(r.next_attempt_at)
        )
        for r in rows
    }


def insert(
    db: Database, lease: Lease, step_id: int, values: Sequence[Any], now: datetime
) -> dict[int, Item]:
    """Store a step's item list (all pending), fenced, in chunks of `CHUNK` rows."""
    with db.write() as conn:
        _fence(conn, lease, db.is_postgres)
        for start in range(0, len(values), CHUNK):
            conn.execute(
                IT.insert(),
                [
                    {
                        "workflow_step_id": step_id,
                        "item_index": start + n,
                        "task_id": lease.task_id,
                        "item": v,
                        "status": PENDING,
                        "attempts": 0,
                        "updated_at": now,
                    }
                    for n, v in enumerate(values[start : start + CHUNK])
                ],
            )
    return {i: Item(i) for i in range(len(values))}


def write(
    db: Database,
    lease: Lease,
    step_id: int,
    step: tuple[str, int],
    changed: Iterable[Item],
    results: Mapping[int, Any],
    fetch: Sequence[int],
    now: datetime,
) -> dict[int, Any]:
    """One fenced batch: items' new states, their results, failed items' history rows.

    Args:
        step: the step's name and attempt (its history rows' attempt; the item's own
            attempt is in their reason).
        changed: the items whose state changed (recorded outcomes, started attempts).
        results: the results of the items of `changed` that completed, by index.
        fetch: the items whose values to read back (those it starts).

    Returns:
        The values of the `fetch` items, by index.

    Raises:
        LeaseLostError: the lease is no longer ours; nothing was written.
    """
    rows = [
        {
            "p_step": step_id,
            "p_i": i.index,
            "p_status": i.status,
            "p_attempts": i.attempts,
            "p_error": i.error,
            "p_next": i.next_attempt_at,
            "p_results": results.get(i.index),
            "p_now": now,
        }
        for i in changed
    ]
    failed = [r for r in rows if r["p_status"] == ERROR]
    changes = _failures(step_id, step, failed)  # the history records every item failure
    if db.is_postgres:
        history = step_change_rows(lease.task_id, changes, now)
        return _write_pg(db, lease, step_id, rows, history, fetch, now)
    with db.write() as conn:
        _fence(conn, lease, db.is_postgres)
        if rows:
            conn.execute(_UPDATE, rows)
        write_step_changes(conn, lease.task_id, changes, now)
        if not fetch:
            return {}
        got = conn.execute(
            sa.select(IT.c.item_index, IT.c.item).where(
                IT.c.workflow_step_id == step_id, IT.c.item_index.in_(list(fetch))
            )
        ).all()
    return {int(r.item_index): r.item for r in got}


#: PostgreSQL: the whole batch in one statement (one round trip, one server transaction).
_WRITE_PG = """
WITH f AS (
    SELECT task_id, tx_seq FROM tasker_tasks
    WHERE task_id = %(task_id)s::bigint AND lease_epoch = %(epoch)s::integer
      AND lease_owner = %(owner)s::text AND status = 'in_progress'
    FOR SHARE
), u AS (
    UPDATE tasker_step_items AS i
    SET status = x.status, attempts = x.attempts, error = x.error,
        next_attempt_at = x.next_attempt_at, results = x.results,
        updated_at = %(now)s::timestamptz
    FROM f, jsonb_to_recordset(%(rows)s::jsonb) AS x(
        item_index integer, status text, attempts integer, error jsonb,
        next_attempt_at timestamptz, results jsonb)
    -- `= ANY` lets the primary key find the rows (a join alone scans the step's items)
    WHERE i.workflow_step_id = %(step)s::bigint AND i.item_index = ANY(%(changed)s::integer[])
      AND i.item_index = x.item_index
), h AS (
    INSERT INTO tasker_workflow_step_transitions
        (workflow_step_id, task_id, from_status, to_status, attempt, reason, details, tx_seq,
         created_at)
    SELECT x.workflow_step_id, f.task_id, x.from_status, x.to_status, x.attempt, x.reason,
           x.details, f.tx_seq, %(now)s::timestamptz
    FROM f, jsonb_to_recordset(%(history)s::jsonb) AS x(
        workflow_step_id bigint, from_status text, to_status text, attempt integer,
        reason text, details jsonb)
)
SELECT -1 AS item_index, NULL::jsonb AS item FROM f
UNION ALL
SELECT i.item_index, i.item FROM tasker_step_items AS i
WHERE EXISTS (SELECT 1 FROM f) AND i.workflow_step_id = %(step)s::bigint
  AND i.item_index = ANY(%(fetch)s::integer[])
"""


def _write_pg(
    db: Database,
    lease: Lease,
    step_id: int,
    rows: list[dict[str, Any]],
    history: list[dict[str, Any]],
    fetch: Sequence[int],
    now: datetime,
) -> dict[int, Any]:
    """`write` on PostgreSQL: one statement on an autocommit driver connection."""
    from tasker.store.postgres import dumps  # the PostgreSQL store's JSON parameters

    params = {
        "task_id": lease.task_id,
        "epoch": lease.epoch,
        "owner": lease.owner,
        "step": step_id,
        "now": now,
        "rows": dumps(
            [
                {
                    "item_index": r["p_i"],
                    "status": r["p_status"],
                    "attempts": r["p_attempts"],
                    "error": r["p_error"],
                    "next_attempt_at": r["p_next"],
                    "results": r["p_results"],
                }
                for r in rows
            ]
        ),
        "history": dumps(history),
        "changed": [r["p_i"] for r in rows],
        "fetch": list(fetch),
    }
    with db.autocommit() as conn, conn.cursor() as cur:
        cur.execute(_WRITE_PG, params)
        got = cur.fetchall()
    if not got:
        raise LeaseLostError(f"task {lease.task_id}: lease epoch {lease.epoch} is no longer ours")
    return {int(i): item for i, item in got if i >= 0}


def _failures(step_id: int, step: tuple[str, int], rows: list[dict[str, Any]]) -> list[StepChange]:
    """The history rows of failed items: the step stays in progress, its items go on."""
    out = []
    for r in rows:
        err = r["p_error"] or {}
        final = "no attempt left" if r["p_next"] is None else "will be retried"
        why = (
            f"item {r['p_i']} failed (attempt {r['p_attempts']}, {final}): "
            f"{err.get('error_class', '')}: "
        )
        out.append(
            StepChange(
                step_id,
                step[0],
                _IN_PROGRESS,
                _IN_PROGRESS,
                step[1],
                f"{why}{err.get('message', '')}",
                err or None,
            )
        )
    return out


def results(db: Database, step_id: int) -> list[Any]:
    """Every item's results, in item order (the step's `{"items": [...]}`)."""
    with db.read() as conn:
        return list(
            conn.execute(
                sa.select(IT.c.results)
                .where(IT.c.workflow_step_id == step_id)
                .order_by(IT.c.item_index)
            ).scalars()
        )


def status_counts(conn: Connection, task_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """For each step (by id) of these tasks that has items: items per status."""
    out: dict[int, dict[str, int]] = {}
    rows = conn.execute(
        sa.select(IT.c.workflow_step_id, IT.c.status, sa.func.count())
        .where(IT.c.task_id.in_(list(task_ids)))
        .group_by(IT.c.workflow_step_id, IT.c.status)
    ).all()
    for step_id, status, n in rows:
        out.setdefault(int(step_id), {})[str(status)] = int(n)
    return out


def retry_failed(conn: Connection, step_ids: Sequence[int], now: datetime) -> None:
    """Give the failed items of these steps a fresh budget (`app.retry`): only those run."""
    if step_ids:
        conn.execute(
            sa.update(IT)
            .where(IT.c.workflow_step_id.in_(list(step_ids)), IT.c.status == ERROR)
            .values(status=PENDING, attempts=0, next_attempt_at=None, updated_at=now)
        )
