"""for_each: the items of a step, a row each (`tasker_step_items`)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
_When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tasker_step_items",
        sa.Column("workflow_step_id", _BigId, nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=False),
        sa.Column("task_id", _BigId, nullable=False),
        sa.Column("item", _Json, nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("results", _Json, nullable=True),
        sa.Column("error", _Json, nullable=True),
        sa.Column("next_attempt_at", _When, nullable=True),
        sa.Column("updated_at", _When, nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_step_id"],
            ["tasker_workflow_steps.workflow_step_id"],
            name=op.f("fk_tasker_step_items_workflow_step_id_tasker_workflow_steps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "workflow_step_id", "item_index", name=op.f("pk_tasker_step_items")
        ),
    )
    op.create_index("ix_tasker_step_items_task_id", "tasker_step_items", ["task_id"])


def downgrade() -> None:
    op.drop_index("ix_tasker_step_items_task_id", table_name="tasker_step_items")
    op.drop_table("tasker_step_items")
