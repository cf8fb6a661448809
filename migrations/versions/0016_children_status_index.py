"""an index for the probes of awaited children by status

- `ix_tasker_tasks_parent_step_waits_status` on `tasker_tasks` (parent_step_id,
  parent_waits, status, task_id) where parent_step_id is set: a step awaiting its
  children asks whether one failed or is still live by an index probe, so a parent
  woken once per finished child reads one entry per wake (fan-in linear in children).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

INDEX = "ix_tasker_tasks_parent_step_waits_status"


def upgrade() -> None:
    op.create_index(
        INDEX,
        "tasker_tasks",
        ["parent_step_id", "parent_waits", "status", "task_id"],
        unique=False,
        postgresql_where=sa.text("parent_step_id IS NOT NULL"),
        sqlite_where=sa.text("parent_step_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="tasker_tasks")
