"""Reading steps: one select and one row-to-view conversion, derived from the schema.

Every field of `tasker.core.views.StepView` that is a column of `workflow_steps` is
read from that column (times as aware UTC); `name` and `dependent_system` come from
the catalog, and `depends_on` from the task's stored edges: a task runs, and is shown
with, the DAG it was created with, whatever its registration says now. The stores'
statements are derived from the same declarations (`schema.STEP_CREATE`,
`schema.STEP_WRITE`), so a new step column is declared in `schema`, `StepView` and a
migration only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasker.core.clock import maybe_utc
from tasker.core.views import StepView
from tasker.store import schema as m

S, E = m.workflow_steps, m.step_edges

#: The `StepView` fields read from the `workflow_steps` column of the same name.
VIEW_COLUMNS = tuple(f.name for f in fields(StepView) if f.name in S.c)
_TIMES = tuple(n for n in VIEW_COLUMNS if isinstance(S.c[n].type, sa.DateTime))
_PLAIN = tuple(n for n in VIEW_COLUMNS if n not in _TIMES)

#: The label of the step's parents (its `depends_on`): their step ids, comma-separated.
PARENTS = "parent_ids"

#: What a step row is selected with (every reader, and the claim on PostgreSQL).
STEP_COLUMNS: tuple[Any, ...] = (
    *(S.c[n] for n in VIEW_COLUMNS),
    m.named_steps.c.name,
    m.dependent_systems.c.name.label("dependent_system"),
    sa.select(sa.func.aggregate_strings(sa.cast(E.c.from_step_id, sa.String), ","))
    .where(E.c.to_step_id == S.c.workflow_step_id)
    .scalar_subquery()
    .label(PARENTS),
)

#: The tables a step row is selected from (its name and dependent system joined).
STEP_FROM = S.join(m.named_steps, S.c.named_step_id == m.named_steps.c.named_step_id).join(
    m.dependent_systems,
    m.named_steps.c.dependent_system_id == m.dependent_systems.c.dependent_system_id,
)


# Built once, the ids an expanding parameter: SQLAlchemy finds the compiled form in its
# cache without generating a cache key for a new statement on every read.
_SELECT_STEPS = (
    sa.select(S.c.task_id, *STEP_COLUMNS)
    .select_from(STEP_FROM)
    .where(S.c.task_id.in_(sa.bindparam("task_ids", expanding=True)))
    .order_by(S.c.task_id, S.c.position)
)


def read_steps(conn: Connection, task_ids: Sequence[int]) -> list[Any]:
    """The step rows of some tasks (`task_id` and `STEP_COLUMNS`), each task's in order."""
    return list(conn.execute(_SELECT_STEPS, {"task_ids": list(task_ids)}).all())


def step_view(row: Any, names: Mapping[int, str]) -> StepView:
    """The view of one step row selected with `STEP_COLUMNS`.

    Args:
        row: the row (any object with the columns as attributes).
        names: the step names of the row's task by step id (to name its parents).
    """
    values = {n: getattr(row, n) for n in _PLAIN}
    for n in _TIMES:
        values[n] = maybe_utc(getattr(row, n))
    parents = getattr(row, PARENTS)
    depends_on = tuple(sorted(names[int(i)] for i in parents.split(","))) if parents else ()
    return StepView(
        name=row.name, dependent_system=row.dependent_system, depends_on=depends_on, **values
    )


def views_of(rows: Iterable[Any]) -> dict[str, StepView]:
    """The views of one task's step rows, by name, in the rows' (topological) order."""
    rows = list(rows)
    names = {int(r.workflow_step_id): r.name for r in rows}
    return {r.name: step_view(r, names) for r in rows}


def inputs_of(view: StepView, context: Any) -> Any:
    """What a step's handler sees as `step.inputs`: its stored inputs, else the context."""
    return context if view.inputs is None else view.inputs
