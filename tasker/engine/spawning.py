"""Sub-tasks in the engine: `step.spawn` in a handler's thread, and the children's state.

`Spawner.spawn` checks the child's request as `enqueue` would (an unknown task name
or a bad request raises in the handler, failing the attempt), hands its id out ahead
(`tasker.store.ids`) and returns a `tasker.core.spawns.Spawn` with the row to insert;
the engine inserts it with the attempt's outcome. A step spawning a key it spawned
before (a retried step) gets that child back, and nothing is inserted for it.

`awaited_children` reads what the decisions need of the children awaited by steps: a
summary (`tasker.core.spawns.Children`) through an index on (step, status), so each
wake of a parent costs the same however many children it has.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasker.control.enqueue import new_task
from tasker.core.spawns import CHILD_FAILED, CHILD_LIVE, Children, Spawn
from tasker.definition.registry import HandlerFactory
from tasker.definition.request import TaskRequest
from tasker.errors import InvalidRequestError
from tasker.store import schema as m
from tasker.store.catalog import Catalog
from tasker.store.db import Database
from tasker.store.ids import TaskIds

T = m.tasks


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
    ) -> Spawn:
        """One child of step `step_id`: the existing one for `key`, else a new one.

        Raises:
            InvalidRequestError: `request` is one `enqueue` refuses, or it has an
                idempotency key, or it names a `one_per_subject` task with a subject (a
                spawn key says what is the same child).
            UnknownTaskError: no handler of that name is registered here.

        With `conn` (a transactional step's connection, in its open transaction) what
        must be written ahead (SQLite's id counter, a new catalog row) is written there:
        on SQLite that transaction holds the only write lock.
        """
        if key in before:
            return Spawn(key, before[key], wait)
        if request.idempotency_key is not None:
            raise InvalidRequestError(
                "spawn(): a sub-task's request cannot have an idempotency_key; its spawn "
                "key already makes a retried step get the same child"
            )
        reg = self._factory.get(request.name, request.version)
        if getattr(reg.handler, "one_per_subject", False) is True and request.subject:
            raise InvalidRequestError(
                f"spawn(): task {reg.name!r} is one_per_subject; a sub-task cannot take a "
                "subject (spawn it without one, or enqueue it)"
            )
        task_id = self._ids.take(conn)
        extra = {
            "task_id": task_id,
            "parent_task_id": parent_task_id,
            "parent_step_id": step_id,
            "spawn_key": key,
            "parent_waits": wait,
        }
        return Spawn(
            key, task_id, wait, new_task(self._catalog, reg, request, self._clock(), extra, conn)
        )


def awaited_children(db: Database, steps: dict[int, str]) -> dict[str, Children]:
    """What the awaited children of some steps are: step name -> `Children`.

    Per step one statement of index probes (the first failed child, whether one is
    live), each reading at most one row of `ix_tasker_tasks_parent_step_waits_status`;
    the children are counted only once none is live or failed (the step completes).

    Args:
        steps: the steps' names by step id.
    """
    out: dict[str, Children] = {}
    if not steps:
        return out
    with db.read() as conn:
        for step_id, name in steps.items():
            out[name] = _children_of(conn, step_id)
    return out


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
