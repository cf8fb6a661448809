"""outbox: index deliver_at (the sweeper's scan) instead of created_at (read by nothing)

Each sweep deletes the outbox rows due longer ago than a grace period: without an
index on `deliver_at` that is a scan of the whole table, every `sweep_seconds`, under
exactly the backlog that makes the table long. Nothing reads `created_at` by range, so
its index goes: an outbox insert still maintains three indexes, not four.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasker_outbox") as batch_op:
        batch_op.create_index("ix_tasker_outbox_deliver_at", ["deliver_at"], unique=False)
        batch_op.drop_index("ix_tasker_outbox_created_at")


def downgrade() -> None:
    with op.batch_alter_table("tasker_outbox") as batch_op:
        batch_op.create_index("ix_tasker_outbox_created_at", ["created_at"], unique=False)
        batch_op.drop_index("ix_tasker_outbox_deliver_at")
