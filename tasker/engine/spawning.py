"""Sub-tasks in the engine: `step.spawn` in a handler's thread, and the children's state.

`Spawner.spawn` checks the child's request as `enqueue` would (an unknown task name
or a bad request raises in the handler, failing the attempt; an idempotency key or a
`one_per_subject` subject is answered as `enqueue` answers it), hands its id out ahead
(`tasker.store.ids`) and returns a `tasker.core.spawns.Spawn` with the row to insert;
the engine inserts it with the attempt's outcome. A step spawning a key it spawned
before (a retried step) gets that child back, and nothing is inserted for it.

`awaited_children` reads what the decisions need of the children awaited by steps: a
summary (`tasker.core.spawns.Children`) through an index on (step, status), so each
wake of a parent costs the same however many children it has. For a decision step
whose children are all done it also reads back the labels its handler chose, kept in
the history row of the outcome that left it awaiting (`tasker.core.branches.keep`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tasker.control.enqueue import check_request, checked_task, is_key_taken, keyed_task
from tasker.control.subjects import duplicate_of, is_subject_conflict
from tasker.core import branches
from tasker.core.spawns import CHILD_FAILED, CHILD_LIVE, Children, Spawn
from tasker.core.states import Status
from tasker.definition.registry import HandlerFactory
from tasker.definition.request import TaskRequest
from tasker.engine.outcome import Outcome, describe
from tasker.errors import DuplicateTaskError, IdempotencyConflictError, InvalidRequestError
from tasker.store import schema as m
from tasker.store.catalog import Catalog
from tasker.store.db import Database
from tasker.store.ids import TaskIds

T, ST = m.tasks, m.step_transitions


class Spawner:
    """What `step.spawn` calls in a worker (one per engine; thread-safe)."""

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        factory: HandlerFactory,
        clock: Callable[[], datetime],
    ) -> None:
        self._db = db
        self._catalog = catalog
        self._factory = factory
        self._clock = clock
        self._ids = TaskIds(db)

    def existing(self, step_id: int) -> dict[str, int]:
        """The children a step spawned before, by key (one read, on its first spawn)."""
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(T.c.spawn_key, T.c.task_id).where(T.c.parent_step_id == step_id)
            ).all()
        return {str(r.spawn_key): int(r.task_id) for r in rows}

    def spawn(
        self,
        parent_task_id: int,
        step_id: int,
        request: TaskRequest,
        key: str,
        wait: bool,
        before: dict[str, int],
        conn: Connection | None = None,
        earlier: Sequence[Spawn] = (),
    ) -> Spawn:
        """One child of step `step_id`: the existing one for `key`, else a new one.

        `earlier` are the spawns of this run so far (their children not stored yet).

        A request with an `idempotency_key` is answered as `enqueue` answers it: a task
        stored under that key by the same request is returned (nothing is inserted); a
        `one_per_subject` task's subject held by a task that is not final raises.

        Raises:
            InvalidRequestError: `request` is one `enqueue` refuses, or its key names a
                task this step did not spawn while `wait` is True (only a step's own
                children can be awaited: spawn it with wait=False to get its id).
            IdempotencyConflictError: its key was used with a different request.
            DuplicateTaskError: its `one_per_subject` task holds the subject already
                (`.existing_task_id`).
            UnknownTaskError: no handler of that name is registered here.

        With `conn` (a transactional step's connection, in its open transaction) what
        must be written ahead (SQLite's id counter, a new catalog row) is written there:
        on SQLite that transaction holds the only write lock.
        """
        if key in before:
            return Spawn(key, before[key], wait)
        reg = self._factory.get(request.name, request.version)
        values = check_request(reg, request)
        same = _same_in_run(values, earlier)
        if same is not None:
            return Spawn(key, same, wait)
        if values["idempotency_key"] is not None:
            found = keyed_task(self._db, reg, request, values, conn)
            if found is not None:
                task_id, spawned_by = found
                if wait and spawned_by != step_id:
                    raise InvalidRequestError(
                        f"spawn(): idempotency key {values['idempotency_key']!r} names task "
                        f"{task_id}, which this step did not spawn: it cannot wait for it "
                        "(spawn with wait=False to get its id)"
                    )
                return Spawn(key, task_id, wait)
        duplicate = duplicate_of(self._db, values, conn)
        if duplicate is not None:
            raise duplicate
        task_id = self._ids.take(conn)
        extra = {
            "task_id": task_id,
            "parent_task_id": parent_task_id,
            "parent_step_id": step_id,
            "spawn_key": key,
            "parent_waits": wait,
        }
        new = checked_task(self._catalog, reg, request, values, self._clock(), extra, conn)
        return Spawn(key, task_id, wait, new)


def claims_taken(exc: IntegrityError) -> bool:
    """Whether a write inserting children failed because a key or subject was taken."""
    return is_key_taken(exc) or is_subject_conflict(exc)


def refused_children(o: Outcome, exc: IntegrityError) -> Outcome:
    """What to record for an attempt whose keyed or subject children could not be inserted.

    Another caller took an idempotency key or a `one_per_subject` subject between the
    spawn's check and the write of the attempt's outcome: the attempt fails and spawns
    nothing; its retry's spawns see the stored task (`Spawner.spawn`).
    """
    if not o.ok or not any(_claims(s) for s in o.spawned):
        return o
    error = describe(exc)
    error["message"] = (
        f"step {o.name!r}: a sub-task's idempotency key or subject was taken by another "
        f"task before this attempt's outcome was written; nothing was spawned ({exc.orig})"
    )
    return Outcome(o.name, o.token, ok=False, error=error, annotations=o.annotations)


def _claims(s: Spawn) -> bool:
    """Whether a spawn's new child takes a key or a subject another task may take."""
    v = s.new.values if s.new is not None else {}
    return v.get("idempotency_key") is not None or v.get("subject_scope") is not None


def _same_in_run(values: dict[str, Any], earlier: Sequence[Spawn]) -> int | None:
    """The child of this run a checked request names again by its key, else None.

    Raises:
        IdempotencyConflictError: the run used its key for a different request.
        DuplicateTaskError: a child of this run holds its `one_per_subject` subject.
    """
    key, scope = values["idempotency_key"], values.get("subject_scope")
    for s in earlier:
        v = s.new.values if s.new is not None else None
        if v is None:
            continue
        if key is not None and v.get("idempotency_key") == key:
            if v.get("request_digest") != values["request_digest"]:
                raise IdempotencyConflictError(
                    f"spawn(): idempotency key {key!r} was used by sub-task {s.task_id} of "
                    "this run with a different request"
                )
            return s.task_id
        if scope is not None and (v.get("subject_scope"), v.get("subject")) == (
            scope,
            values.get("subject"),
        ):
            raise DuplicateTaskError(
                f"task {scope!r} already has sub-task {s.task_id} of this run for subject "
                f"{values.get('subject')!r} (one_per_subject)",
                s.task_id,
            )
    return None


def awaited_children(
    db: Database, steps: dict[int, str], deciders: Collection[int] = ()
) -> dict[str, Children]:
    """What the awaited children of some steps are: step name -> `Children`.

    Per step one statement of index probes (the first failed child, whether one is
    live), each reading at most one row of `ix_tasker_tasks_parent_step_waits_status`;
    the children are counted only once none is live or failed (the step completes),
    and then a decision step's kept labels are read (`Children.decision`).

    Args:
        steps: the steps' names by step id.
        deciders: the ids of those that are decision steps (`StepTemplate.branches`).
    """
    out: dict[str, Children] = {}
    if not steps:
        return out
    with db.read() as conn:
        for step_id, name in steps.items():
            kids = _children_of(conn, step_id)
            if step_id in deciders and not kids.live and kids.failed is None:
                kids = replace(kids, decision=kept_decision(conn, step_id))
            out[name] = kids
    return out


def kept_decision(conn: Connection, step_id: int) -> tuple[str, ...] | None:
    """The labels a decision step awaiting its children kept, else None.

    They are in the details of the history row of the outcome that left it awaiting:
    its latest row from `in_progress` to `in_progress` (a step is retried only after it
    failed, so a later attempt's outcome is a later row). The step's rows are found by
    their index on the step; a step has a few (two per attempt).
    """
    details = conn.execute(
        sa.select(ST.c.details)
        .where(
            ST.c.workflow_step_id == step_id,
            ST.c.from_status == Status.IN_PROGRESS.value,
            ST.c.to_status == Status.IN_PROGRESS.value,
        )
        .order_by(ST.c.tx_seq.desc(), ST.c.transition_id.desc())
        .limit(1)
    ).scalar()
    return branches.kept(details)


def _awaited(step_id: int) -> sa.ColumnElement[bool]:
    return sa.and_(T.c.parent_step_id == step_id, T.c.parent_waits == sa.true())


def _children_of(conn: Connection, step_id: int) -> Children:
    """What the children a step awaits are (see `awaited_children`)."""
    firsts = [
        sa.select(T.c.task_id)
        .where(_awaited(step_id), T.c.status == status)
        .order_by(T.c.task_id)
        .limit(1)
        .scalar_subquery()
        .label(status)
        for status in sorted(CHILD_FAILED)
    ]
    live = sa.exists().where(_awaited(step_id), T.c.status.in_(sorted(CHILD_LIVE)))
    row = conn.execute(sa.select(*firsts, live.label("live"))).one()
    failed = min(
        ((int(row._mapping[s]), s) for s in CHILD_FAILED if row._mapping[s] is not None),
        default=None,
    )
    if failed is not None or row.live:
        return Children(bool(row.live), failed)
    count = conn.execute(sa.select(sa.func.count()).where(_awaited(step_id))).scalar_one()
    return Children(False, None, int(count))


def awaiting_children(views: Collection[Any]) -> dict[int, str]:
    """The steps (id -> name) awaiting their children, of a task's step views."""
    return {
        v.workflow_step_id: v.name
        for v in views
        if v.status == "in_progress" and v.awaiting == "children"
    }
