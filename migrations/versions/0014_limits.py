"""limits per dependent system: `tasker_limits`, `tasker_limit_holds`, `tasker_limit_waits`

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tasker_limits",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=True),
        sa.Column("per_second", sa.Integer(), nullable=True),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_tasker_limits")),
    )
    op.create_table(
        "tasker_limit_holds",
        sa.Column("workflow_step_id", _ID, nullable=False),
        sa.Column("task_id", _ID, nullable=False),
        sa.Column("system", sa.String(128), nullable=False),
        sa.Column("started_at", _WHEN, nullable=False),
        sa.Column("expires_at", _WHEN, nullable=False),
        sa.Column("released_at", _WHEN, nullable=True),
        sa.PrimaryKeyConstraint("workflow_step_id", name=op.f("pk_tasker_limit_holds")),
    )
    op.create_index(
        op.f("ix_tasker_limit_holds_system_started_at"),
        "tasker_limit_holds",
        ["system", "started_at"],
    )
    op.create_index(op.f("ix_tasker_limit_holds_task_id"), "tasker_limit_holds", ["task_id"])
    op.create_table(
        "tasker_limit_waits",
        sa.Column("workflow_step_id", _ID, nullable=False),
        sa.Column("task_id", _ID, nullable=False),
        sa.Column("system", sa.String(128), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("workflow_step_id", name=op.f("pk_tasker_limit_waits")),
    )
    op.create_index(op.f("ix_tasker_limit_waits_system"), "tasker_limit_waits", ["system"])
    op.create_index(op.f("ix_tasker_limit_waits_task_id"), "tasker_limit_waits", ["task_id"])


def downgrade() -> None:
    op.drop_table("tasker_limit_waits")
    op.drop_table("tasker_limit_holds")
    op.drop_table("tasker_limits")
