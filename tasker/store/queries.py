"""Reading tasks, steps, annotations and the audit trail for the public API."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from psycopg.rows import namedtuple_row
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from tasker.core.clock import as_utc, maybe_utc
from tasker.core.items import counts as item_counts
from tasker.core.jsonvalue import contains as json_contains
from tasker.core.jsonvalue import json_problem
from tasker.core.states import Status
from tasker.core.views import AnnotationView, StepView, TaskView, TransitionView
from tasker.core.waits import awaits_event, with_waiting_for
from tasker.errors import InvalidRequestError, TaskNotFoundError
from tasker.store import items
from tasker.store import schema as m
from tasker.store.db import Database, reading
from tasker.store.events import consumers
from tasker.store.limits import waiting_steps
from tasker.store.steps import STEP_COLUMNS, STEP_FROM, inputs_of, read_steps, views_of

T, S = m.tasks, m.workflow_steps
_TASK = sa.select(T, m.named_tasks.c.name, m.named_tasks.c.version).join(
    m.named_tasks, T.c.named_task_id == m.named_tasks.c.named_task_id
)


def task_id_of(value: Any) -> int:
    """Check a task id given by a caller.

    Raises:
        TaskNotFoundError: it is not a positive integer (so it names no task).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TaskNotFoundError(f"no task has id {value!r}")
    return value


def _steps(conn: Connection, task_ids: list[int]) -> dict[int, dict[str, StepView]]:
    by_task: dict[int, list[Any]] = {t: [] for t in task_ids}
    for r in read_steps(conn, task_ids):
        by_task[int(r.task_id)].append(r)
    out = {t: views_of(rows) for t, rows in by_task.items()}
    _count_items(conn, out)
    return out


def _count_items(conn: Connection, steps: dict[int, dict[str, StepView]]) -> None:
    """Give the `for_each` steps of these tasks their items' counts (`StepView.items`)."""
    counted = items.status_counts(conn, list(steps))
    if counted:
        for views in steps.values():
            for name, v in views.items():
                if v.workflow_step_id in counted:
                    views[name] = replace(v, items=item_counts(counted[v.workflow_step_id]))


def _holding(conn: Connection, steps: dict[int, dict[str, StepView]]) -> set[int]:
    """The steps that have consumed their event, among these tasks' (asked only if needed)."""
    asking = [t for t, views in steps.items() if any(awaits_event(v) for v in views.values())]
    return consumers(conn, asking) if asking else set()


def _limited(conn: Connection, steps: dict[int, dict[str, StepView]]) -> set[int]:
    """The steps held back by a limit, among these tasks' (asked only if one is pending)."""
    asking = [t for t, views in steps.items() if any(v.status == "pending" for v in views.values())]
    return waiting_steps(conn, asking) if asking else set()


def _children(conn: Connection, task_ids: list[int]) -> dict[int, list[int]]:
    """The ids of the tasks each of `task_ids` spawned, in spawn order."""
    out: dict[int, list[int]] = {t: [] for t in task_ids}
    rows = conn.execute(
        sa.select(T.c.parent_task_id, T.c.task_id)
        .where(T.c.parent_task_id.in_(task_ids))
        .order_by(T.c.parent_task_id, T.c.task_id)
    )
    for r in rows:
        out[int(r.parent_task_id)].append(int(r.task_id))
    return out


@dataclass(frozen=True)
class Spawned:
    """A task a step spawned, as the dashboard draws it under that step."""

    task_id: int
    name: str
    status: str
    parent_step_id: int | None


def spawned(db: Database, task_id: int) -> list[Spawned]:
    """The tasks the steps of `task_id` spawned, in spawn order, with the spawning step."""
    NT = m.named_tasks
    with db.read() as conn:
        rows = conn.execute(
            sa.select(T.c.task_id, NT.c.name, T.c.status, T.c.parent_step_id)
            .join(NT, T.c.named_task_id == NT.c.named_task_id)
            .where(T.c.parent_task_id == task_id)
            .order_by(T.c.task_id)
        ).all()
    return [
        Spawned(
            int(r.task_id),
            str(r.name),
            str(r.status),
            None if r.parent_step_id is None else int(r.parent_step_id),
        )
        for r in rows
    ]


def _task_view(
    row: Any,
    steps: dict[str, StepView],
    notes: list[AnnotationView],
    children: list[int] | None = None,
    holding: set[int] | None = None,
    limited: set[int] | None = None,
) -> TaskView:
    steps = {n: replace(v, inputs=inputs_of(v, row.context)) for n, v in steps.items()}
    steps = with_waiting_for(steps, row.status, holding or (), limited or ())
    return TaskView(
        task_id=int(row.task_id),
        name=row.name,
        version=row.version,
        status=row.status,
        context=row.context,
        tags=list(row.tags),
        initiator=row.initiator,
        source_system=row.source_system,
        reason=row.reason,
        requested_at=as_utc(row.requested_at),
        completed_at=maybe_utc(row.completed_at),
        idempotency_key=row.idempotency_key,
        next_run_at=maybe_utc(row.next_run_at),
        steps=steps,
        annotations=notes,
        bypass_steps=list(row.bypass_steps),
        subject=row.subject,
        created_at=as_utc(row.created_at),
        parent_task_id=None if row.parent_task_id is None else int(row.parent_task_id),
        children=tuple(children or ()),
        error=row.error,
        deadline_at=maybe_utc(row.deadline_at),
    )


def _one_task() -> sa.Select[Any]:
    """The select of `get_task`: a task, its steps and what else it has, in one statement.

    One row per step (one with no step columns for a task without steps), in the steps'
    order; the task's columns are labelled `t_<column>`, with its spawned tasks' ids
    (comma-separated) and whether it has annotations and items; each step row says whether
    a limit holds the step back (`limit_held`). One statement reads one snapshot, and
    what is rare (annotations, items) is asked for only when there is some.
    """
    NT, C = m.named_tasks, T.alias("child")
    task = [c.label(f"t_{c.name}") for c in T.c]
    children = (
        sa.select(sa.func.aggregate_strings(sa.cast(C.c.task_id, sa.String), ","))
        .where(C.c.parent_task_id == T.c.task_id)
        .scalar_subquery()
    )
    noted = sa.exists().where(m.task_annotations.c.task_id == T.c.task_id)
    itemized = sa.exists().where(m.step_items.c.task_id == T.c.task_id)
    W = m.limit_waits
    held = sa.exists().where(W.c.workflow_step_id == S.c.workflow_step_id)
    return (
        sa.select(
            *task,
            NT.c.name.label("t_name"),
            NT.c.version.label("t_version"),
            children.label("t_children"),
            noted.label("t_noted"),
            itemized.label("t_itemized"),
            *STEP_COLUMNS,
            held.label("limit_held"),
        )
        .select_from(T.join(NT, T.c.named_task_id == NT.c.named_task_id).outerjoin(STEP_FROM))
        .where(T.c.task_id == sa.bindparam("task_id"))
        .order_by(S.c.position)
    )


_ONE_TASK = _one_task()
#: The same select as PostgreSQL's psycopg takes it (`%(task_id)s`), run on a driver
#: connection in autocommit mode: no transaction around one statement, no result set-up.
_ONE_TASK_PG = str(
    _ONE_TASK.params(task_id=0).compile(
        dialect=postgresql.psycopg.dialect(paramstyle="pyformat"),  # type: ignore[no-untyped-call]
        compile_kwargs={"render_postcompile": True},
    )
)


def get_task(db: Database, task_id: Any, caller: Connection | None = None) -> TaskView:
    """One task with its steps and annotations (read through `caller` when given).

    On PostgreSQL a task without annotations, items or event waits is one statement on a
    driver connection; the others are read in a transaction, as on SQLite.

    Raises:
        TaskNotFoundError: no task has that id.
    """
    tid = task_id_of(task_id)
    if caller is None and db.is_postgres:
        with (
            db.autocommit(counted=False) as driver,
            driver.cursor(row_factory=namedtuple_row) as cur,
        ):
            rows = cur.execute(_ONE_TASK_PG, {"task_id": tid}).fetchall()
        view = _assembled(None, rows, tid)
        if view is not None:
            return view
    with reading(db, caller) as conn:
        view = _assembled(conn, conn.execute(_ONE_TASK, {"task_id": tid}).all(), tid)
    assert view is not None  # with a connection, everything could be read
    return view


def _assembled(conn: Connection | None, rows: Sequence[Any], tid: int) -> TaskView | None:
    """The view of a task from the rows of `_ONE_TASK`, and what it says is left to read.

    Returns:
        The view; None when there is more to read (annotations, items' counts, which
        steps consumed their event) and no `conn` to read it with.

    Raises:
        TaskNotFoundError: no row: no task has that id.
    """
    if not rows:
        raise TaskNotFoundError(f"no task has id {tid}")
    row = SimpleNamespace(**{k[2:]: v for k, v in rows[0]._asdict().items() if k[:2] == "t_"})
    step_rows = [r for r in rows if r.workflow_step_id is not None]
    by_task = {tid: views_of(step_rows)}
    events = any(awaits_event(v) for v in by_task[tid].values())
    if conn is None:
        if row.itemized or row.noted or events:
            return None
        notes, holding = [], set()
    else:
        if row.itemized:
            _count_items(conn, by_task)
        notes = _annotations(conn, None, tid) if row.noted else []
        holding = _holding(conn, by_task)
    limited = {int(r.workflow_step_id) for r in step_rows if r.limit_held}
    children = sorted(int(i) for i in row.children.split(",")) if row.children else []
    return _task_view(row, by_task[tid], notes, children, holding, limited)


def list_tasks(
    db: Database,
    status: str | None,
    name: str | None,
    limit: int,
    subject: str | None = None,
    before: int | None = None,
) -> list[TaskView]:
    """Tasks, newest first, with their steps (annotations are left out: see `annotations`).

    `before` keeps only tasks with a smaller id (a page after the one that ended there).

    Raises:
        InvalidRequestError: an unknown status or a limit below 1.
    """
    if status is not None and status not in {s.value for s in Status}:
        raise InvalidRequestError(f"unknown status {status!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidRequestError(f"limit must be a positive integer, got {limit!r}")
    q = _TASK.order_by(T.c.task_id.desc()).limit(limit)
    if status is not None:
        q = q.where(T.c.status == status)
    if name is not None:
        q = q.where(m.named_tasks.c.name == name)
    if subject is not None:
        q = q.where(T.c.subject == subject)
    if before is not None:
        q = q.where(T.c.task_id < before)
    with db.read() as conn:
        rows = conn.execute(q).all()
        ids = [int(r.task_id) for r in rows]
        steps = _steps(conn, ids) if ids else {}
        children = _children(conn, ids) if ids else {}
        holding, limited = _holding(conn, steps), _limited(conn, steps)
    return [
        _task_view(r, steps[int(r.task_id)], [], children[int(r.task_id)], holding, limited)
        for r in rows
    ]


def _annotations(
    conn: Connection,
    annotation_type: str | None,
    task_id: int | None,
    contains: dict[str, Any] | None = None,
    is_postgres: bool = False,
) -> list[AnnotationView]:
    A, AT = m.task_annotations, m.annotation_types
    q = (
        sa.select(A.c.task_id, AT.c.name, A.c.annotation, A.c.created_at)
        .join(AT, A.c.annotation_type_id == AT.c.annotation_type_id)
        .order_by(A.c.task_annotation_id)
    )
    if annotation_type is not None:
        q = q.where(AT.c.name == annotation_type)
    if task_id is not None:
        q = q.where(A.c.task_id == task_id)
    keep: Callable[[Any], bool] = lambda _doc: True  # noqa: E731
    if contains is not None:
        if is_postgres:
            q = q.where(A.c.annotation.op("@>")(sa.cast(contains, m.Json)))
        else:
            # Narrow by top-level scalars in SQL, then apply @> semantics exactly.
            for key, value in contains.items():
                quoted_ok = '"' not in key and "\\" not in key
                scalar = isinstance(value, (str, int, float)) and not isinstance(value, bool)
                if quoted_ok and scalar:
                    q = q.where(sa.func.json_extract(A.c.annotation, f'$."{key}"') == value)
            keep = lambda doc: json_contains(doc, contains)  # noqa: E731
    return [
        AnnotationView(int(r.task_id), r.name, r.annotation, as_utc(r.created_at))
        for r in conn.execute(q)
        if keep(r.annotation)
    ]


def list_annotations(
    db: Database, annotation_type: str | None, task_id: Any, contains: dict[str, Any] | None
) -> list[AnnotationView]:
    """Annotations filtered by type, task and JSON containment.

    Raises:
        InvalidRequestError: `contains` is not a JSON object.
        TaskNotFoundError: `task_id` is not a valid id.
    """
    tid = None if task_id is None else task_id_of(task_id)
    if contains is not None and (not isinstance(contains, dict) or json_problem(contains)):
        raise InvalidRequestError(f"contains must be a JSON object, got {contains!r}")
    with db.read() as conn:
        return _annotations(conn, annotation_type, tid, contains, db.is_postgres)


def history(db: Database, task_id: Any) -> list[TransitionView]:
    """The task's audit trail: every task and step status change, oldest first.

    Raises:
        TaskNotFoundError: no task has that id.
    """
    tid = task_id_of(task_id)
    TT, ST = m.task_transitions, m.step_transitions
    with db.read() as conn:
        if conn.execute(sa.select(T.c.task_id).where(T.c.task_id == tid)).first() is None:
            raise TaskNotFoundError(f"no task has id {tid}")
        task_rows = conn.execute(sa.select(TT).where(TT.c.task_id == tid)).all()
        step_rows = conn.execute(
            sa.select(ST, m.named_steps.c.name)
            .join(S, ST.c.workflow_step_id == S.c.workflow_step_id)
            .join(m.named_steps, S.c.named_step_id == m.named_steps.c.named_step_id)
            .where(ST.c.task_id == tid)
        ).all()
    # Transactions are ordered by the task's tx_seq; within one, the task's own start
    # comes before its steps' changes and its finish after them; then insertion order.
    keyed: list[tuple[tuple[int, int, int], TransitionView]] = []
    for r in task_rows:
        rank = 2 if r.to_status in _ENDINGS else 0
        view = TransitionView(
            None, r.from_status, r.to_status, r.reason, None, as_utc(r.created_at)
        )
        keyed.append(((r.tx_seq, rank, int(r.transition_id)), view))
    for r in step_rows:
        view = TransitionView(
            r.name, r.from_status, r.to_status, r.reason, r.attempt, as_utc(r.created_at)
        )
        keyed.append(((r.tx_seq, 1, int(r.transition_id)), view))
    return [view for _, view in sorted(keyed, key=lambda kv: kv[0])]


_ENDINGS = {
    Status.COMPLETE.value,
    Status.ERROR.value,
    Status.CANCELLED.value,
    Status.RESOLVED_MANUALLY.value,
}
