"""journeys: subjects, schedules, the retention index, status triggers

- `tasker_tasks.subject` (what a task is about) and `subject_scope` (the task name while
  a `one_per_subject` task is not final): a partial unique index over the pair holds
  one live task per subject; a partial index over `subject` serves `list_tasks`.
- A partial index over `completed_at` of final tasks: the retention purge's scan.
- `tasker_schedules`: durable schedules, each due at `next_tick`.
- Triggers (`tasker.store.triggers`): a task that becomes final releases its subject;
  on PostgreSQL a task that stops running sends `NOTIFY tasker_task_done`.
- Final tasks that have no `completed_at` (cancelled before it was set) get their
  last update time, so retention can purge them.

Revision ID: 0007
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from tasker.store import triggers

Json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
FINAL = "status IN ('complete', 'cancelled', 'resolved_manually')"

revision = "0007"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasker_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("subject_scope", sa.String(length=128), nullable=True))
        batch_op.create_index(
            "uq_tasker_tasks_live_subject",
            ["subject_scope", "subject"],
            unique=True,
            postgresql_where=sa.text("subject_scope IS NOT NULL"),
            sqlite_where=sa.text("subject_scope IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_tasker_tasks_subject_task_id",
            ["subject", "task_id"],
            unique=False,
            postgresql_where=sa.text("subject IS NOT NULL"),
            sqlite_where=sa.text("subject IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_tasker_tasks_completed_at",
            ["completed_at"],
            unique=False,
            postgresql_where=sa.text(FINAL),
            sqlite_where=sa.text(FINAL),
        )
    op.create_table(
        "tasker_schedules",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("request", Json, nullable=False),
        sa.Column("cron", sa.String(length=255), nullable=True),
        sa.Column("every_seconds", sa.Float(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("next_tick", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_tasker_schedules")),
    )
    with op.batch_alter_table("tasker_schedules", schema=None) as batch_op:
        batch_op.create_index("ix_tasker_schedules_next_tick", ["next_tick"], unique=False)
    op.execute(
        f"UPDATE tasker_tasks SET completed_at = updated_at WHERE {FINAL} AND completed_at IS NULL"
    )
    triggers.create(op.get_bind())


def downgrade() -> None:
    triggers.drop(op.get_bind())
    with op.batch_alter_table("tasker_schedules", schema=None) as batch_op:
        batch_op.drop_index("ix_tasker_schedules_next_tick")
    op.drop_table("tasker_schedules")
    with op.batch_alter_table("tasker_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasker_tasks_completed_at")
        batch_op.drop_index("ix_tasker_tasks_subject_task_id")
        batch_op.drop_index("uq_tasker_tasks_live_subject")
        batch_op.drop_column("subject_scope")
        batch_op.drop_column("subject")
