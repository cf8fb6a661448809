"""tracing: the trace context stored with each task

- `tasker_tasks.trace_context`: the W3C trace context (JSON) its enqueue ran in, so that
  every pass over the task continues that trace (`tasker.engine.tracing`); NULL unless
  tracing is on.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column: ALTER TABLE ADD COLUMN on both databases (no SQLite recreate,
    # so the table keeps its triggers).
    op.add_column("tasker_tasks", sa.Column("trace_context", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasker_tasks") as batch_op:
        batch_op.drop_column("trace_context")
