"""events: `tasker_events`, and the event each step waits for

- `tasker_events`: events signalled to a task (`Tasker.signal`), kept in order until a
  step consumes one (`consumed_by`); indexed by (task_id, name, event_id).
- `tasker_workflow_steps.wait_for`: the event name of a `wait_for` step.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_JSON = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("tasker_workflow_steps") as batch_op:
        batch_op.add_column(sa.Column("wait_for", sa.String(128), nullable=True))
    op.create_table(
        "tasker_events",
        sa.Column("event_id", _ID, primary_key=True, autoincrement=True),
        sa.Column("task_id", _ID, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("payload", _JSON, nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("consumed_by", _ID, nullable=True),
        sa.Column("consumed_at", _WHEN, nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasker_tasks.task_id"],
            name=op.f("fk_tasker_events_task_id_tasker_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_tasker_events")),
    )
    op.create_index(
        op.f("ix_tasker_events_task_id_name_event_id"),
        "tasker_events",
        ["task_id", "name", "event_id"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_tasker_events_task_id_name_event_id"), table_name="tasker_events")
    op.drop_table("tasker_events")
    with op.batch_alter_table("tasker_workflow_steps") as batch_op:
        batch_op.drop_column("wait_for")
