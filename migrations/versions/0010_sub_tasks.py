"""sub-tasks: a task's parent, the spawn key, what an in-progress step awaits, id counters

- `tasker_tasks.parent_task_id`, `parent_step_id`, `spawn_key`, `parent_waits`: the task
  and step that spawned a task (`step.spawn`), the key (unique per step) and whether the
  step waits for it; an index on (parent_task_id, task_id) serves `TaskView.children`.
- `tasker_workflow_steps.awaiting`: what an `in_progress` step whose handler returned
  waits for ("children", "items"), so it is not taken for a step whose worker was lost.
- `tasker_id_counters`: SQLite's counter of task ids handed out ahead of their rows.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("tasker_tasks") as batch_op:
        batch_op.add_column(sa.Column("parent_task_id", _BigId, nullable=True))
        batch_op.add_column(sa.Column("parent_step_id", _BigId, nullable=True))
        batch_op.add_column(sa.Column("spawn_key", sa.String(255), nullable=True))
        batch_op.add_column(sa.Column("parent_waits", sa.Boolean(), nullable=True))
    op.create_index(
        "ix_tasker_tasks_parent_task_id_task_id",
        "tasker_tasks",
        ["parent_task_id", "task_id"],
        postgresql_where=sa.text("parent_task_id IS NOT NULL"),
        sqlite_where=sa.text("parent_task_id IS NOT NULL"),
    )
    op.create_index(
        "uq_tasker_tasks_parent_step_id_spawn_key",
        "tasker_tasks",
        ["parent_step_id", "spawn_key"],
        unique=True,
        postgresql_where=sa.text("parent_step_id IS NOT NULL"),
        sqlite_where=sa.text("parent_step_id IS NOT NULL"),
    )
    with op.batch_alter_table("tasker_workflow_steps") as batch_op:
        batch_op.add_column(sa.Column("awaiting", sa.String(16), nullable=True))
    op.create_table(
        "tasker_id_counters",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_tasker_id_counters")),
    )


def downgrade() -> None:
    op.drop_table("tasker_id_counters")
    with op.batch_alter_table("tasker_workflow_steps") as batch_op:
        batch_op.drop_column("awaiting")
    op.drop_index("uq_tasker_tasks_parent_step_id_spawn_key", table_name="tasker_tasks")
    op.drop_index("ix_tasker_tasks_parent_task_id_task_id", table_name="tasker_tasks")
    with op.batch_alter_table("tasker_tasks") as batch_op:
        batch_op.drop_column("parent_waits")
        batch_op.drop_column("spawn_key")
        batch_op.drop_column("parent_step_id")
        batch_op.drop_column("parent_task_id")
