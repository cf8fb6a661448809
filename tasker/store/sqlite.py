"""The hot writes as SQLAlchemy Core statements in one transaction (the SQLite store).

Statements are built once, with bind parameters; each write is one `BEGIN
IMMEDIATE` transaction, so SQLite's single writer never deadlocks on an upgrade.
The hot ones (enqueue, claim, the engine's fenced write) run through
`tasker.store.prepared`: SQLAlchemy's compilation of these statements, on the driver
connection of the transaction. See `tasker.store.base.Store` for what each method promises.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime
from operator import attrgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasker.core.states import TASK_LIVE, Status
from tasker.store import prepared
from tasker.store import schema as m
from tasker.store.audit import task_change_row
from tasker.store.base import NEW_TASK_DEFAULTS, NewTask
from tasker.store.db import Database
from tasker.store.ids import reserve
from tasker.store.lease import CLAIM_FIELDS, Claimed, Lease, TaskWrite, audit_rows, refusal
from tasker.store.steps import read_steps

T, S = m.tasks, m.workflow_steps
_IN_PROGRESS = Status.IN_PROGRESS.value
_When = m.When


def _p(name: str, type_: Any = None) -> sa.BindParameter[Any]:
    return sa.bindparam(f"p_{name}", type_=type_)


_CLAIM = (
    sa.update(T)
    .where(
        T.c.task_id == _p("task_id"),
        # Literals, not one expanding parameter: the text is fixed (see `prepared`).
        T.c.status.in_([sa.literal(s.value, m.tasks.c.status.type) for s in TASK_LIVE]),
        # NULL: idle until nudged (a step awaits its children): any message claims it.
        sa.or_(T.c.next_run_at.is_(None), T.c.next_run_at <= _p("now", _When)),
        sa.or_(T.c.lease_owner.is_(None), T.c.lease_expires_at < _p("now", _When)),
    )
    .values(
        status=_IN_PROGRESS,
        # Due while leased, so the sweeper finds it should this worker die.
        next_run_at=sa.func.coalesce(T.c.next_run_at, _p("now", _When)),
        lease_owner=_p("owner"),
        lease_epoch=T.c.lease_epoch + 1,
        lease_expires_at=_p("expires", _When),
        tx_seq=T.c.tx_seq + 1,
        updated_at=_p("now", _When),
    )
    .returning(*(T.c[n] for n in CLAIM_FIELDS))
)

_FENCE = (
    sa.update(T)
    .where(
        T.c.task_id == _p("task_id"),
        T.c.lease_epoch == _p("epoch"),
        T.c.lease_owner == _p("owner"),
        T.c.status == _IN_PROGRESS,
        T.c.revision == _p("revision"),
    )
    .values(
        tx_seq=T.c.tx_seq + 1,
        updated_at=_p("now", _When),
        status=_p("status"),
        lease_owner=_p("new_owner"),
        lease_expires_at=_p("expires", _When),
        next_run_at=sa.case(
            (_p("set_next", sa.Boolean) == sa.true(), _p("next_run_at", _When)),
            else_=T.c.next_run_at,
        ),
        completed_at=sa.func.coalesce(_p("completed_at", _When), T.c.completed_at),
        error=sa.case(
            (_p("set_next", sa.Boolean) == sa.true(), _p("error", m.Json)), else_=T.c.error
        ),
        finish_due_at=sa.func.coalesce(_p("finish_due_at", _When), T.c.finish_due_at),
    )
    .returning(T.c.tx_seq)
)

#: The engine's step write: the `schema.STEP_WRITE` columns, from the step's view.
_STEPS = (
    sa.update(S)
    .where(S.c.workflow_step_id == _p("id"))
    .values({**{n: _p(n, S.c[n].type) for n in m.STEP_WRITE}, "updated_at": _p("now", _When)})
)
_STEP_PARAMS = tuple(f"p_{n}" for n in m.STEP_WRITE)
_step_writes = attrgetter(*m.STEP_WRITE)

_TASK_TRANSITIONS = m.task_transitions.insert()
_STEP_TRANSITIONS = m.step_transitions.insert()
_ANNOTATIONS = m.task_annotations.insert()
_OUTBOX = m.outbox.insert()
_EDGES = m.step_edges.insert()
_CONSUME = (
    sa.update(m.events)
    .where(
        m.events.c.event_id == _p("event_id"),
        m.events.c.task_id == _p("task_id"),
        m.events.c.consumed_by.is_(None),
    )
    .values(consumed_by=_p("step_id"), consumed_at=_p("now", _When))
)
_LEASE_OF = sa.select(T.c.lease_epoch, T.c.lease_owner, T.c.status).where(
    T.c.task_id == _p("task_id")
)


_STEPS_INSERT = m.workflow_steps.insert().returning(
    m.workflow_steps.c.workflow_step_id, sort_by_parameter_order=True
)
_TASK_INSERT = m.tasks.insert().returning(T.c.task_id, T.c.tx_seq, sort_by_parameter_order=True)
_DELETE_OUTBOX = sa.delete(m.outbox).where(
    m.outbox.c.task_id == _p("task_id"), m.outbox.c.deliver_at <= _p("now", _When)
)


class SqlStore:
    """The `Store` of the embedded SQLite database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def insert_tasks(
        self, tasks: Sequence[NewTask], now: datetime, caller: Connection | None = None
    ) -> list[tuple[int, list[int]]]:
        """See `Store.insert_tasks`: one transaction, one statement per table."""
        if not tasks:
            return []
        with self._db.write() if caller is None else nullcontext(caller) as conn:
            # Ids from the counter that ids handed out ahead come from (`tasker.store.ids`);
            # a spawned child brings its own.
            unnumbered = sum(1 for t in tasks if t.values.get("task_id") is None)
            fresh = iter(range(reserve(conn, unnumbered), 1 << 62) if unnumbered else ())
            rows = prepared.execute_each(
                conn,
                _TASK_INSERT,
                [
                    {
                        **NEW_TASK_DEFAULTS,
                        **t.values,
                        "task_id": t.values.get("task_id") or next(fresh),
                        "status": Status.PENDING.value,
                        "created_at": now,
                        "updated_at": now,
                        "next_run_at": now,
                    }
                    for t in tasks
                ],
            )
            firsts = [(int(r["task_id"]), int(r["tx_seq"])) for r in rows]
            inserted = prepared.execute_each(
                conn,
                _STEPS_INSERT,
                [
                    {
                        "task_id": task_id,
                        "attempts": 0,
                        "created_at": now,
                        "updated_at": now,
                        **{n: step[n] for n in m.STEP_CREATE},
                    }
                    for (task_id, _), t in zip(firsts, tasks, strict=True)
                    for step in t.steps
                ],
            )
            flat = iter(int(r["workflow_step_id"]) for r in inserted)
            ids = [[next(flat) for _ in t.steps] for t in tasks]
            edges = [
                {"from_step_id": steps[a], "to_step_id": steps[b], "task_id": task_id}
                for (task_id, _), t, steps in zip(firsts, tasks, ids, strict=True)
                for a, b in t.edges
            ]
            prepared.execute_many(conn, _EDGES, edges)
            prepared.execute_many(
                conn,
                _TASK_TRANSITIONS,
                [
                    {
                        **task_change_row(task_id, None, Status.PENDING, "enqueued", now),
                        "tx_seq": seq,
                    }
                    for task_id, seq in firsts
                ],
            )
            prepared.execute_many(
                conn,
                _STEP_TRANSITIONS,
                [
                    {
                        "workflow_step_id": i,
                        "task_id": task_id,
                        "from_status": None,
                        "to_status": step["status"],
                        "attempt": 0,
                        "reason": step["reason"],
                        "details": None,
                        "tx_seq": seq,
                        "created_at": now,
                    }
                    for (task_id, seq), t, steps in zip(firsts, tasks, ids, strict=True)
                    for i, step in zip(steps, t.steps, strict=True)
                ],
            )
            prepared.execute_many(
                conn,
                _OUTBOX,
                [
                    {"task_id": task_id, "deliver_at": now, "created_at": now}
                    for task_id, _ in firsts
                ],
            )
        return [(task_id, steps) for (task_id, _), steps in zip(firsts, ids, strict=True)]

    def claim(self, task_id: int, owner: str, now: datetime, expires: datetime) -> Claimed | None:
        """See `Store.claim`."""
        with self._db.write() as conn:
            rows = prepared.execute(
                conn,
                _CLAIM,
                {"p_task_id": task_id, "p_owner": owner, "p_now": now, "p_expires": expires},
            )
            if not rows:
                return None
            task = rows[0]
            if task["lease_epoch"] == 1:
                change = task_change_row(
                    task_id, Status.PENDING, Status.IN_PROGRESS, "claimed", now
                )
                prepared.execute(conn, _TASK_TRANSITIONS, {**change, "tx_seq": task["tx_seq"]})
            prepared.execute(conn, _DELETE_OUTBOX, {"p_task_id": task_id, "p_now": now})
            steps = read_steps(conn, [task_id])
        return Claimed(Lease(task_id, owner, int(task["lease_epoch"])), task, steps)

    def apply(self, w: TaskWrite, caller: Connection | None = None) -> int:
        """See `Store.apply`."""
        step_rows, task_row = audit_rows(w)
        with self._db.write() if caller is None else nullcontext(caller) as conn:
            seq = _apply(conn, w, step_rows, task_row)
            if seq is None:
                current = conn.execute(_LEASE_OF, {"p_task_id": w.lease.task_id}).first()
                raise refusal(w, None if current is None else dict(current._mapping))
            if w.spawned:
                self.insert_tasks(w.spawned, w.now, conn)
        return seq


def _apply(
    conn: Connection,
    w: TaskWrite,
    step_rows: list[dict[str, Any]],
    task_row: dict[str, Any] | None,
) -> int | None:
    lease, now, task_id = w.lease, w.now, w.lease.task_id
    fence = {
        f"p_{k}": v
        for k, v in (
            ("task_id", task_id),
            ("epoch", lease.epoch),
            ("owner", lease.owner),
            ("revision", w.revision),
            ("now", now),
            *w.task_values().items(),
        )
    }
    rows = prepared.execute(conn, _FENCE, fence)
    if not rows:
        return None
    seq = int(rows[0]["tx_seq"])
    prepared.execute_many(
        conn,
        _STEPS,
        [
            {
                "p_id": v.workflow_step_id,
                "p_now": now,
                **dict(zip(_STEP_PARAMS, _step_writes(v), strict=True)),
            }
            for v in w.steps
        ],
    )
    prepared.execute_many(conn, _STEP_TRANSITIONS, [{**r, "tx_seq": seq} for r in step_rows])
    if task_row is not None:
        prepared.execute(conn, _TASK_TRANSITIONS, {**task_row, "tx_seq": seq})
    prepared.execute_many(
        conn,
        _ANNOTATIONS,
        [
            {"task_id": task_id, "annotation_type_id": t, "annotation": a, "created_at": now}
            for t, a in w.annotations
        ],
    )
    deliver_at = w.deliver_at()
    if deliver_at is not None:
        prepared.execute(
            conn, _OUTBOX, {"task_id": task_id, "deliver_at": deliver_at, "created_at": now}
        )
    prepared.execute_many(
        conn,
        _CONSUME,
        [
            {"p_event_id": e, "p_step_id": s, "p_task_id": task_id, "p_now": now}
            for e, s in w.consumed
        ],
    )
    if w.nudge is not None:
        prepared.execute(conn, _OUTBOX, {"task_id": w.nudge, "deliver_at": now, "created_at": now})
    return seq
