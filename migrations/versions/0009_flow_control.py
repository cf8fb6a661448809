"""flow control: the `paused` status, and reattempts counted apart from attempts

- The status check constraints of `tasker_tasks` and `tasker_workflow_steps` are
  rewritten to allow `paused` (a batch table recreate on SQLite).
- `tasker_workflow_steps.reattempts`: runs that asked to run again later.
- A pending step's "not before" time (a wait, a reattempt) is its `next_attempt_at`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tasker.store import triggers

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_BEFORE = (
    "'pending', 'in_progress', 'complete', 'error', 'cancelled', 'resolved_manually', 'skipped'"
)
_AFTER = f"{_BEFORE}, 'paused'"


def _statuses(table: str, allowed: str, recreate: bool) -> None:
    with op.batch_alter_table(table, recreate="always" if recreate else "auto") as batch_op:
        batch_op.drop_constraint(op.f(f"ck_{table}_status"), type_="check")
        batch_op.create_check_constraint(op.f(f"ck_{table}_status"), f"status IN ({allowed})")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    _statuses("tasker_tasks", _AFTER, sqlite)
    _statuses("tasker_workflow_steps", _AFTER, sqlite)
    with op.batch_alter_table("tasker_workflow_steps") as batch_op:
        batch_op.add_column(
            sa.Column("reattempts", sa.Integer(), nullable=False, server_default="0")
        )
    if sqlite:  # the recreated table lost its triggers
        triggers.create(op.get_bind())


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("tasker_workflow_steps") as batch_op:
        batch_op.drop_column("reattempts")
    op.execute("UPDATE tasker_tasks SET status = 'in_progress' WHERE status = 'paused'")
    _statuses("tasker_workflow_steps", _BEFORE, sqlite)
    _statuses("tasker_tasks", _BEFORE, sqlite)
    if sqlite:
        triggers.create(op.get_bind())
