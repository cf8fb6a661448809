"""The step columns are declared once (`schema`) and everything else derives from them."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime, timezone
from types import SimpleNamespace

from tasker.core.views import StepView
from tasker.store import postgres, sqlite, steps
from tasker.store import schema as m

S = m.workflow_steps
#: The view's fields that are not columns of the step row itself.
JOINED = {"name", "dependent_system", "depends_on"}
#: The view's fields derived from others (`tasker.core.waits`, `StepView.__post_init__`).
DERIVED = {"waiting_for", "idempotency_key", "items"}  # items: counted from the item rows


def test_every_step_view_field_is_a_step_column_or_joined():
    """Given StepView, then each field is read from the step column of its name, or is one
    of the three joined in (name, dependent system, parents): none is forgotten."""
    names = {f.name for f in fields(StepView)}
    assert names - JOINED - DERIVED == set(steps.VIEW_COLUMNS)
    assert set(steps.VIEW_COLUMNS) <= set(S.c.keys())


def test_the_written_columns_are_columns_and_the_engine_writes_them_from_its_view():
    """Given the declarations, then what enqueue and the engine set are step columns, and
    what the engine sets is a field of the view it plans with."""
    assert set(m.STEP_CREATE) <= set(S.c.keys())
    assert set(m.STEP_WRITE) <= set(steps.VIEW_COLUMNS)


def test_both_stores_write_exactly_the_declared_columns():
    """Given the prebuilt statements, then the PostgreSQL write and enqueue and the SQLite
    write set the declared step columns (plus the bookkeeping the stores add)."""
    for name in m.STEP_WRITE:
        assert f"{name} = x.{name}" in postgres.APPLY
    for name in m.STEP_CREATE:
        assert f"x.{name}" in postgres.ENQUEUE
    sql = str(sqlite._STEPS.compile())
    assigned = sql.split(" SET ")[1].split(" WHERE ")[0].split(", ")
    assert {a.split("=")[0] for a in assigned} == {*m.STEP_WRITE, "updated_at"}


def test_a_row_becomes_a_view_with_utc_times_and_its_stored_parents():
    """Given a step row with a naive time and two parents (ids), when it becomes a view,
    then its times are aware UTC and `depends_on` names the parents, sorted."""
    naive = datetime(2026, 1, 2, 3, 4, 5)
    row = SimpleNamespace(
        **dict.fromkeys(steps.VIEW_COLUMNS),
        name="join",
        dependent_system="shop",
        parent_ids="7,3",
    )
    row.workflow_step_id, row.status, row.attempts = 9, "pending", 0
    row.last_attempted_at = naive
    view = steps.step_view(row, {3: "b", 7: "a", 9: "join"})
    assert view.depends_on == ("a", "b")
    assert view.last_attempted_at == naive.replace(tzinfo=timezone.utc)
    assert (view.name, view.dependent_system, view.workflow_step_id) == ("join", "shop", 9)


def test_a_step_without_parents_depends_on_nothing():
    """Given a root step's row (no edges: NULL parents), then `depends_on` is empty."""
    row = SimpleNamespace(**dict.fromkeys(steps.VIEW_COLUMNS), name="root", parent_ids=None)
    row.dependent_system, row.workflow_step_id = "default", 1
    assert steps.views_of([row])["root"].depends_on == ()
