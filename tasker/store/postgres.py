"""The PostgreSQL store: each hot write is one statement.

Claiming a task, each lease-fenced engine write and each enqueue are single
statements made of data-modifying CTEs, sent on a driver connection in autocommit
mode: one round trip, one server transaction, and a constant text that psycopg
prepares once per connection. Rows travel as one JSON array each
(`jsonb_to_recordset`), so the text does not depend on how many there are. See
`tasker.store.Store` for what each method promises.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime
from operator import attrgetter
from typing import Any

import sqlalchemy as sa
from psycopg.rows import RowFactory, namedtuple_row, tuple_row
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from tasker.core.views import StepView
from tasker.store import schema as m
from tasker.store.base import NewTask
from tasker.store.db import Database
from tasker.store.lease import CLAIM_FIELDS, Claimed, Lease, TaskWrite, audit_rows, refusal
from tasker.store.steps import PARENTS, STEP_COLUMNS

_ALIASES = {"tasker_workflow_steps": "s", "tasker_named_steps": "ns"}
_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def _step_column(c: Any) -> str:
    """One of `STEP_COLUMNS` in the claim's SELECT (its joins alias the tables)."""
    if c.name == PARENTS:
        return (
            "(SELECT string_agg(e.from_step_id::text, ',') FROM tasker_workflow_step_edges AS e"
            f" WHERE e.to_step_id = s.workflow_step_id) AS {PARENTS}"
        )
    if isinstance(c, sa.Label):  # the dependent system's name
        return f"ds.name AS {c.name}"
    return f"{_ALIASES[c.table.name]}.{c.name}"


def _record(names: Sequence[str]) -> str:
    """The column definitions of step columns in a `jsonb_to_recordset(...) AS x(...)`."""
    return ", ".join(f"{n} {m.workflow_steps.c[n].type.compile(dialect=_PG)}" for n in names)


_STEP_SELECT = ", ".join(_step_column(c) for c in STEP_COLUMNS)

_CLAIM = """
WITH c AS (
    UPDATE tasker_tasks
    SET status = 'in_progress', lease_owner = %(owner)s::text, lease_epoch = lease_epoch + 1,
        lease_expires_at = %(expires)s::timestamptz, tx_seq = tx_seq + 1,
        updated_at = %(now)s::timestamptz,
        next_run_at = COALESCE(next_run_at, %(now)s::timestamptz)
    WHERE task_id = %(task_id)s::bigint AND status IN ('pending', 'in_progress')
      AND (next_run_at IS NULL OR next_run_at <= %(now)s::timestamptz)
      AND (lease_owner IS NULL OR lease_expires_at < %(now)s::timestamptz)
    RETURNING {fields}
), gone AS (
    DELETE FROM tasker_outbox AS o USING c
    WHERE o.task_id = c.task_id AND o.deliver_at <= %(now)s::timestamptz
), claimed AS (
    INSERT INTO tasker_task_transitions
        (task_id, from_status, to_status, reason, tx_seq, created_at)
    SELECT c.task_id, 'pending', 'in_progress', 'claimed', c.tx_seq, %(now)s::timestamptz
    FROM c WHERE c.lease_epoch = 1
)
SELECT {steps}, {task}
FROM c LEFT JOIN (
    tasker_workflow_steps AS s
    JOIN tasker_named_steps AS ns ON ns.named_step_id = s.named_step_id
    JOIN tasker_dependent_systems AS ds ON ds.dependent_system_id = ns.dependent_system_id
) ON s.task_id = c.task_id
ORDER BY s.position
"""

# The engine's write is one statement of CTEs, each run only if the fence `f` matched. Its
# parts that have nothing to write this time are left out (`apply_sql`), and so is the
# finishing half of the task update for a write that keeps the lease: each shape is a
# constant text, built once and prepared by psycopg once per connection.
_FENCE = """
WITH f AS (
    UPDATE tasker_tasks
    SET tx_seq = tx_seq + 1, updated_at = %(now)s::timestamptz, {task_set}
    WHERE task_id = %(task_id)s::bigint AND lease_epoch = %(epoch)s::integer
      AND lease_owner = %(owner)s::text AND status = 'in_progress'
      AND revision = %(revision)s::integer
    RETURNING tx_seq
)"""
#: A write that keeps the lease changes only its expiry (status and owner stay as fenced).
_KEEP = "lease_expires_at = %(expires)s::timestamptz"
#: A write that ends the pass: `TaskWrite.task_values`.
_FINISH = """status = %(status)s::text,
        lease_owner = %(new_owner)s::text, lease_expires_at = %(expires)s::timestamptz,
        next_run_at = CASE WHEN %(set_next)s::boolean THEN %(next_run_at)s::timestamptz
                      ELSE next_run_at END,
        completed_at = COALESCE(%(completed_at)s::timestamptz, completed_at),
        error = CASE WHEN %(set_next)s::boolean THEN %(error)s::jsonb ELSE error END,
        finish_due_at = COALESCE(%(finish_due_at)s::timestamptz, finish_due_at)"""
#: The optional parts of the write, in the order they run, each named by its parameter.
_PARTS = {
    "steps": """
    UPDATE tasker_workflow_steps AS w
    SET {step_set}, updated_at = %(now)s::timestamptz
    FROM f, jsonb_to_recordset(%(steps)s::jsonb) AS x(id bigint, {step_record})
    WHERE w.workflow_step_id = x.id AND w.task_id = %(task_id)s::bigint""",
    "step_changes": """
    INSERT INTO tasker_workflow_step_transitions
        (workflow_step_id, task_id, from_status, to_status, attempt, reason, details, tx_seq,
         created_at)
    SELECT x.workflow_step_id, %(task_id)s::bigint, x.from_status, x.to_status, x.attempt,
           x.reason, x.details, f.tx_seq, %(now)s::timestamptz
    FROM f, ROWS FROM (jsonb_to_recordset(%(step_changes)s::jsonb) AS (
        workflow_step_id bigint, from_status text, to_status text, attempt integer,
        reason text, details jsonb)) WITH ORDINALITY AS x(
        workflow_step_id, from_status, to_status, attempt, reason, details, n)
    ORDER BY x.n""",
    "task_to": """
    INSERT INTO tasker_task_transitions
        (task_id, from_status, to_status, reason, tx_seq, created_at)
    SELECT %(task_id)s::bigint, 'in_progress', %(task_to)s::text, %(task_reason)s::text,
           f.tx_seq, %(now)s::timestamptz
    FROM f""",
    "annotations": """
    INSERT INTO tasker_task_annotations (task_id, annotation_type_id, annotation, created_at)
    SELECT %(task_id)s::bigint, x.type_id, x.annotation, %(now)s::timestamptz
    FROM f, ROWS FROM (jsonb_to_recordset(%(annotations)s::jsonb) AS (
        type_id integer, annotation jsonb)) WITH ORDINALITY AS x(type_id, annotation, n)
    ORDER BY x.n""",
    "deliver_at": """
    INSERT INTO tasker_outbox (task_id, deliver_at, created_at)
    SELECT %(task_id)s::bigint, %(deliver_at)s::timestamptz, %(now)s::timestamptz
    FROM f""",
    "consumed": """
    UPDATE tasker_events AS e
    SET consumed_by = x.step_id, consumed_at = %(now)s::timestamptz
    FROM f, jsonb_to_recordset(%(consumed)s::jsonb) AS x(event_id bigint, step_id bigint)
    WHERE e.event_id = x.event_id AND e.task_id = %(task_id)s::bigint
      AND e.consumed_by IS NULL""",
    "nudge": """
    INSERT INTO tasker_outbox (task_id, deliver_at, created_at)
    SELECT %(nudge)s::bigint, %(now)s::timestamptz, %(now)s::timestamptz
    FROM f""",
}
# What the task row was (before this statement) tells a refused write why (`refusal`).
_APPLIED = """
SELECT f.tx_seq, t.lease_epoch, t.lease_owner, t.status
FROM tasker_tasks AS t LEFT JOIN f ON true
WHERE t.task_id = %(task_id)s::bigint
"""


# Ids are drawn from the tables' sequences up front (in request and position order), so
# the steps, edges and history of every task of a batch can refer to them in the same
# statement. The sequences are the ones `serial`/identity columns get by default.
_ENQUEUE = """
WITH x AS MATERIALIZED ({tasks}), y AS MATERIALIZED (
    SELECT r.*, nextval('tasker_workflow_steps_workflow_step_id_seq'::regclass)
        AS workflow_step_id
    FROM (SELECT r.*, x.task_id
          FROM jsonb_to_recordset(%(steps)s::jsonb) AS r(
              n integer, {step_record}, reason text)
          JOIN x ON x.n = r.n
          ORDER BY r.n, r.position) AS r
), t AS (
    INSERT INTO tasker_tasks
        (task_id, named_task_id, status, context, tags, bypass_steps, initiator,
         source_system, reason, idempotency_key, request_digest, requested_at, created_at,
         updated_at, next_run_at, subject, subject_scope, parent_task_id, parent_step_id,
         spawn_key, parent_waits, trace_context,
         deadline_at)
    SELECT task_id, named_task_id, 'pending', context, tags, bypass_steps, initiator,
           source_system, reason, idempotency_key, request_digest, requested_at,
           %(now)s::timestamptz, %(now)s::timestamptz, %(now)s::timestamptz, subject,
           subject_scope, parent_task_id, parent_step_id, spawn_key, parent_waits, trace_context,
           deadline_at
    FROM x ORDER BY n
    RETURNING task_id, tx_seq
), s AS (
    INSERT INTO tasker_workflow_steps
        (workflow_step_id, task_id, {step_columns}, attempts, created_at, updated_at)
    SELECT x.workflow_step_id, x.task_id, {step_values}, 0, %(now)s::timestamptz,
           %(now)s::timestamptz
    FROM y AS x ORDER BY x.workflow_step_id
), edges AS (
    INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id, task_id)
    SELECT a.workflow_step_id, b.workflow_step_id, a.task_id
    FROM jsonb_to_recordset(%(edges)s::jsonb) AS e(n integer, parent integer, child integer)
    JOIN y AS a ON a.n = e.n AND a.position = e.parent
    JOIN y AS b ON b.n = e.n AND b.position = e.child
), task_change AS (
    INSERT INTO tasker_task_transitions
        (task_id, from_status, to_status, reason, tx_seq, created_at)
    SELECT t.task_id, NULL, 'pending', 'enqueued', t.tx_seq, %(now)s::timestamptz
    FROM t ORDER BY t.task_id
), step_changes AS (
    INSERT INTO tasker_workflow_step_transitions
        (workflow_step_id, task_id, from_status, to_status, attempt, reason, tx_seq, created_at)
    SELECT y.workflow_step_id, y.task_id, NULL, y.status, 0, y.reason, t.tx_seq,
           %(now)s::timestamptz
    FROM y JOIN t ON t.task_id = y.task_id
    ORDER BY y.workflow_step_id
), outbox AS (
    INSERT INTO tasker_outbox (task_id, deliver_at, created_at)
    SELECT t.task_id, %(now)s::timestamptz, %(now)s::timestamptz FROM t ORDER BY t.task_id
)
SELECT x.n, x.task_id, y.workflow_step_id
FROM x LEFT JOIN y ON y.n = x.n
ORDER BY x.n, y.position
"""

#: The task columns an enqueue sets from its request, with their types (`NewTask.values`).
_TASK_FIELDS = {
    "named_task_id": "integer",
    "context": "jsonb",
    "tags": "jsonb",
    "bypass_steps": "jsonb",
    "initiator": "text",
    "source_system": "text",
    "reason": "text",
    "idempotency_key": "text",
    "request_digest": "text",
    "requested_at": "timestamptz",
    "subject": "text",
    "subject_scope": "text",
    "parent_task_id": "bigint",
    "parent_step_id": "bigint",
    "spawn_key": "text",
    "parent_waits": "boolean",
    "trace_context": "text",
    "deadline_at": "timestamptz",
}
_JSON_FIELDS = tuple(f for f, kind in _TASK_FIELDS.items() if kind == "jsonb")
_NEXT_TASK_ID = "nextval('tasker_tasks_task_id_seq'::regclass)"
# The tasks of a batch: one JSON array, each with its number `n` and its id if given.
_BATCH_TASKS = f"""
    SELECT r.*, COALESCE(r.given_id, {_NEXT_TASK_ID}) AS task_id
    FROM (SELECT * FROM jsonb_to_recordset(%(tasks)s::jsonb) AS r(
        n integer, given_id bigint, {", ".join(f"{f} {t}" for f, t in _TASK_FIELDS.items())})
        ORDER BY n) AS r"""
# One task (the common enqueue): its values as parameters, number 0.
_ONE_TASK = f"""
    SELECT 0 AS n, COALESCE(%(given_id)s::bigint, {_NEXT_TASK_ID}) AS task_id,
        {", ".join(f"%({f})s::{t} AS {f}" for f, t in _TASK_FIELDS.items())}"""


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def dumps(value: Any) -> str:
    """JSON text for a `jsonb` parameter (datetimes as ISO 8601 with their offset)."""
    return json.dumps(value, default=_default, separators=(",", ":"))


_CLAIM_SQL = _CLAIM.format(
    fields=", ".join(CLAIM_FIELDS),
    steps=_STEP_SELECT,
    task=", ".join(f"c.{n} AS t_{n}" for n in CLAIM_FIELDS),
)
_PARTS["steps"] = _PARTS["steps"].format(
    step_set=", ".join(f"{n} = x.{n}" for n in m.STEP_WRITE),
    step_record=_record(m.STEP_WRITE),
)
_apply_texts: dict[tuple[bool, tuple[str, ...]], str] = {}


def apply_sql(finishing: bool, parts: Sequence[str]) -> str:
    """The text of the engine's write (`Store.apply`) of one shape, built once.

    Args:
        finishing: it ends the pass (sets the task's status, lease and schedule), else
            it keeps the lease (renews its expiry).
        parts: the names of the `_PARTS` it writes, in their order there.
    """
    key = (finishing, tuple(parts))
    sql = _apply_texts.get(key)
    if sql is None:
        head = _FENCE.format(task_set=_FINISH if finishing else _KEEP)
        ctes = "".join(f", {name} AS ({_PARTS[name]}\n)" for name in key[1])
        sql = _apply_texts.setdefault(key, head + ctes + _APPLIED)
    return sql


#: The engine's write with every part: it sets the `schema.STEP_WRITE` columns of steps.
APPLY = apply_sql(True, tuple(_PARTS))
_ENQUEUE_STEPS = {
    "step_columns": ", ".join(m.STEP_CREATE),
    "step_values": ", ".join(f"x.{n}" for n in m.STEP_CREATE),
    "step_record": _record(m.STEP_CREATE),
}
#: The enqueue of a batch (`Store.insert_tasks`), setting the `schema.STEP_CREATE` columns
#: of steps.
ENQUEUE = _ENQUEUE.format(tasks=_BATCH_TASKS, **_ENQUEUE_STEPS)
#: The enqueue of one task: the same statement, the task's values as parameters.
ENQUEUE_ONE = _ENQUEUE.format(tasks=_ONE_TASK, **_ENQUEUE_STEPS)
_step_writes = attrgetter(*m.STEP_WRITE)


def _on(caller: Connection, sql: str, params: dict[str, Any]) -> list[Any]:
    """Run a statement of this module on the caller's connection, in its transaction."""
    return list(caller.exec_driver_sql(sql, params).all())


def _step_values(v: StepView) -> dict[str, Any]:
    """A step's row in the write's `steps` parameter."""
    return {"id": v.workflow_step_id, **dict(zip(m.STEP_WRITE, _step_writes(v), strict=True))}


_CHANGE_FIELDS = ("workflow_step_id", "from_status", "to_status", "attempt", "reason", "details")


def _change_values(row: dict[str, Any]) -> dict[str, Any]:
    """A step transition's row in the write's `step_changes` parameter (the rest is known)."""
    return {k: row[k] for k in _CHANGE_FIELDS}


def _refused(w: TaskWrite, rows: Sequence[Sequence[Any]]) -> Exception:
    """Why the write was refused, from the row of `_APPLIED` (none: the task is gone)."""
    if not rows:
        return refusal(w, None)
    _, epoch, owner, status = rows[0]
    return refusal(w, {"lease_epoch": epoch, "lease_owner": owner, "status": status})


class PgStore:
    """The `Store` of a PostgreSQL database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _run(
        self, sql: str, params: dict[str, Any], factory: RowFactory[Any] = tuple_row
    ) -> list[Any]:
        """Run one statement on an autocommit connection; its rows (plain tuples by default)."""
        with self._db.autocommit() as conn, conn.cursor(row_factory=factory) as cur:
            cur.execute(sql, params)
            rows: list[Any] = cur.fetchall()
            return rows

    def insert_tasks(
        self, tasks: Sequence[NewTask], now: datetime, caller: Connection | None = None
    ) -> list[tuple[int, list[int]]]:
        """See `Store.insert_tasks`: one statement for the whole batch."""
        params: dict[str, Any] = {
            "now": now,
            "steps": dumps([{"n": n, **step} for n, t in enumerate(tasks) for step in t.steps]),
            "edges": dumps(
                [{"n": n, "parent": a, "child": b} for n, t in enumerate(tasks) for a, b in t.edges]
            ),
        }
        if len(tasks) == 1:
            values = tasks[0].values
            sql = ENQUEUE_ONE
            params["given_id"] = values.get("task_id")
            params.update((f, values.get(f)) for f in _TASK_FIELDS)
            for f in _JSON_FIELDS:
                params[f] = dumps(params[f])
        else:
            sql = ENQUEUE
            params["tasks"] = dumps(
                [
                    {
                        "n": n,
                        "given_id": t.values.get("task_id"),
                        **{f: t.values.get(f) for f in _TASK_FIELDS},
                    }
                    for n, t in enumerate(tasks)
                ]
            )
        out: list[tuple[int, list[int]]] = [(0, []) for _ in tasks]
        # The caller's connection takes the same text (psycopg's named parameters).
        rows = self._run(sql, params) if caller is None else _on(caller, sql, params)
        for n, task_id, step_id in rows:  # the statement's SELECT
            step_ids = out[n][1]
            out[n] = (int(task_id), step_ids)
            if step_id is not None:
                step_ids.append(int(step_id))
        return out

    def claim(self, task_id: int, owner: str, now: datetime, expires: datetime) -> Claimed | None:
        """See `Store.claim`."""
        params = {"task_id": task_id, "owner": owner, "now": now, "expires": expires}
        rows = self._run(_CLAIM_SQL, params, namedtuple_row)  # steps read by name
        if not rows:
            return None
        first = rows[0]._asdict()
        task = {n: first[f"t_{n}"] for n in CLAIM_FIELDS}
        steps = [r for r in rows if r.workflow_step_id is not None]
        return Claimed(Lease(task_id, owner, int(task["lease_epoch"])), task, steps)

    def apply(self, w: TaskWrite, caller: Connection | None = None) -> int:
        """See `Store.apply`: one statement (on `caller`, the same text in its transaction)."""
        step_rows, task_row = audit_rows(w)
        lease = w.lease
        params: dict[str, Any] = {
            "task_id": lease.task_id,
            "epoch": lease.epoch,
            "owner": lease.owner,
            "revision": w.revision,
            "now": w.now,
        }
        finishing = w.finish is not None
        if finishing:
            params.update(w.task_values())
            if params["error"] is not None:
                params["error"] = dumps(params["error"])
        else:
            params["expires"] = w.lease_until
        parts = []
        if w.steps:
            parts.append("steps")
            params["steps"] = dumps([_step_values(v) for v in w.steps])
        if step_rows:
            parts.append("step_changes")
            params["step_changes"] = dumps([_change_values(r) for r in step_rows])
        if task_row is not None:
            parts.append("task_to")
            params["task_to"], params["task_reason"] = task_row["to_status"], task_row["reason"]
        if w.annotations:
            parts.append("annotations")
            params["annotations"] = dumps(
                [{"type_id": t, "annotation": a} for t, a in w.annotations]
            )
        deliver_at = w.deliver_at()
        if deliver_at is not None:
            parts.append("deliver_at")
            params["deliver_at"] = deliver_at
        if w.consumed:
            parts.append("consumed")
            params["consumed"] = dumps([{"event_id": e, "step_id": s} for e, s in w.consumed])
        if w.nudge is not None:
            parts.append("nudge")
            params["nudge"] = w.nudge
        sql = apply_sql(finishing, parts)
        if caller is None and not w.spawned:  # the hot path: one autocommit statement
            rows = self._run(sql, params)
            if rows and rows[0][0] is not None:
                return int(rows[0][0])
            raise _refused(w, rows)
        # Children are inserted in the same transaction, only if the fence matched; with a
        # `caller` (a transactional step's), that is its transaction, left for it to commit.
        with self._db.write() if caller is None else nullcontext(caller) as conn:
            rows = _on(conn, sql, params)
            if not rows or rows[0][0] is None:
                raise _refused(w, rows)
            if w.spawned:
                self.insert_tasks(w.spawned, w.now, conn)
            return int(rows[0].tx_seq)
