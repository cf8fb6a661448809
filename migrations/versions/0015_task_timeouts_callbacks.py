"""task timeouts and finish callbacks

- `tasker_tasks.deadline_at`: `created_at + TaskHandler.timeout` (NULL: no timeout).
- `tasker_tasks.error`: why the task itself ended in `error` (`TaskView.error`).
- `tasker_tasks.finish_due_at`: an `on_finish` call is owed since then (NULL: none).
- Partial indexes for the sweeper: owed callbacks, and paused tasks with a deadline.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

Json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
PAUSED_DEADLINE = "status = 'paused' AND deadline_at IS NOT NULL"

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasker_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("error", Json, nullable=True))
        batch_op.add_column(sa.Column("finish_due_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_tasker_tasks_finish_due_at",
            ["finish_due_at"],
            unique=False,
            postgresql_where=sa.text("finish_due_at IS NOT NULL"),
            sqlite_where=sa.text("finish_due_at IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_tasker_tasks_paused_deadline_at",
            ["deadline_at"],
            unique=False,
            postgresql_where=sa.text(PAUSED_DEADLINE),
            sqlite_where=sa.text(PAUSED_DEADLINE),
        )


def downgrade() -> None:
    with op.batch_alter_table("tasker_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasker_tasks_paused_deadline_at")
        batch_op.drop_index("ix_tasker_tasks_finish_due_at")
        batch_op.drop_column("finish_due_at")
        batch_op.drop_column("error")
        batch_op.drop_column("deadline_at")
