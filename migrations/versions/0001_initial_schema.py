"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

Json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasker_annotation_types",
        sa.Column("annotation_type_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("annotation_type_id", name=op.f("pk_tasker_annotation_types")),
        sa.UniqueConstraint("name", name=op.f("uq_tasker_annotation_types_name")),
    )
    op.create_table(
        "tasker_dependent_systems",
        sa.Column("dependent_system_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("dependent_system_id", name=op.f("pk_tasker_dependent_systems")),
        sa.UniqueConstraint("name", name=op.f("uq_tasker_dependent_systems_name")),
    )
    op.create_table(
        "tasker_named_tasks",
        sa.Column("named_task_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("named_task_id", name=op.f("pk_tasker_named_tasks")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_tasker_named_tasks_name_version")),
    )
    op.create_table(
        "tasker_outbox",
        sa.Column("outbox_id", BigId, autoincrement=True, nullable=False),
        sa.Column("task_id", BigId, nullable=False),
        sa.Column("deliver_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("outbox_id", name=op.f("pk_tasker_outbox")),
    )
    with op.batch_alter_table("tasker_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_tasker_outbox_created_at", ["created_at"], unique=False)

    op.create_table(
        "tasker_named_steps",
        sa.Column("named_step_id", sa.Integer(), nullable=False),
        sa.Column("dependent_system_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dependent_system_id"],
            ["tasker_dependent_systems.dependent_system_id"],
            name=op.f("fk_tasker_named_steps_dependent_system_id_tasker_dependent_systems"),
        ),
        sa.PrimaryKeyConstraint("named_step_id", name=op.f("pk_tasker_named_steps")),
        sa.UniqueConstraint(
            "dependent_system_id",
            "name",
            name=op.f("uq_tasker_named_steps_dependent_system_id_name"),
        ),
    )
    op.create_table(
        "tasker_tasks",
        sa.Column("task_id", BigId, autoincrement=True, nullable=False),
        sa.Column("named_task_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("context", Json, nullable=False),
        sa.Column("tags", Json, nullable=False),
        sa.Column("bypass_steps", Json, nullable=False),
        sa.Column("initiator", sa.String(length=255), nullable=False),
        sa.Column("source_system", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_digest", sa.String(length=64), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_epoch", sa.Integer(), server_default="0", nullable=False),
        sa.Column("revision", sa.Integer(), server_default="0", nullable=False),
        sa.Column("tx_seq", sa.Integer(), server_default="0", nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'in_progress', 'complete', 'error', 'cancelled', 'resolved_manually', 'skipped')",
            name=op.f("ck_tasker_tasks_status"),
        ),
        sa.ForeignKeyConstraint(
            ["named_task_id"],
            ["tasker_named_tasks.named_task_id"],
            name=op.f("fk_tasker_tasks_named_task_id_tasker_named_tasks"),
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_tasker_tasks")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_tasker_tasks_idempotency_key")),
    )
    with op.batch_alter_table("tasker_tasks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tasker_tasks_due",
            ["next_run_at"],
            unique=False,
            postgresql_where=sa.text("status IN ('pending', 'in_progress')"),
            sqlite_where=sa.text("status IN ('pending', 'in_progress')"),
        )
        batch_op.create_index(
            "ix_tasker_tasks_named_task_id_task_id", ["named_task_id", "task_id"], unique=False
        )
        batch_op.create_index("ix_tasker_tasks_status_task_id", ["status", "task_id"], unique=False)

    op.create_table(
        "tasker_task_annotations",
        sa.Column("task_annotation_id", BigId, autoincrement=True, nullable=False),
        sa.Column("task_id", BigId, nullable=False),
        sa.Column("annotation_type_id", sa.Integer(), nullable=False),
        sa.Column("annotation", Json, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["annotation_type_id"],
            ["tasker_annotation_types.annotation_type_id"],
            name=op.f("fk_tasker_task_annotations_annotation_type_id_tasker_annotation_types"),
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasker_tasks.task_id"],
            name=op.f("fk_tasker_task_annotations_task_id_tasker_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_annotation_id", name=op.f("pk_tasker_task_annotations")),
    )
    with op.batch_alter_table("tasker_task_annotations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tasker_task_annotations_annotation_type_id", ["annotation_type_id"], unique=False
        )
        batch_op.create_index("ix_tasker_task_annotations_task_id", ["task_id"], unique=False)

    op.create_table(
        "tasker_task_transitions",
        sa.Column("transition_id", BigId, autoincrement=True, nullable=False),
        sa.Column("task_id", BigId, nullable=False),
        sa.Column("from_status", sa.String(length=24), nullable=True),
        sa.Column("to_status", sa.String(length=24), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("tx_seq", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasker_tasks.task_id"],
            name=op.f("fk_tasker_task_transitions_task_id_tasker_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("transition_id", name=op.f("pk_tasker_task_transitions")),
    )
    with op.batch_alter_table("tasker_task_transitions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tasker_task_transitions_task_id", ["task_id", "transition_id"], unique=False
        )

    op.create_table(
        "tasker_workflow_steps",
        sa.Column("workflow_step_id", BigId, autoincrement=True, nullable=False),
        sa.Column("task_id", BigId, nullable=False),
        sa.Column("named_step_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("retryable", sa.Boolean(), nullable=False),
        sa.Column("retry_limit", sa.Integer(), nullable=False),
        sa.Column("skippable", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("inputs", Json, nullable=True),
        sa.Column("results", Json, nullable=True),
        sa.Column("error", Json, nullable=True),
        sa.Column("last_attempted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'in_progress', 'complete', 'error', 'cancelled', 'resolved_manually', 'skipped')",
            name=op.f("ck_tasker_workflow_steps_status"),
        ),
        sa.ForeignKeyConstraint(
            ["named_step_id"],
            ["tasker_named_steps.named_step_id"],
            name=op.f("fk_tasker_workflow_steps_named_step_id_tasker_named_steps"),
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasker_tasks.task_id"],
            name=op.f("fk_tasker_workflow_steps_task_id_tasker_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workflow_step_id", name=op.f("pk_tasker_workflow_steps")),
        sa.UniqueConstraint(
            "task_id", "position", name=op.f("uq_tasker_workflow_steps_task_id_position")
        ),
    )
    with op.batch_alter_table("tasker_workflow_steps", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tasker_workflow_steps_named_step_id_status",
            ["named_step_id", "status"],
            unique=False,
        )

    op.create_table(
        "tasker_workflow_step_edges",
        sa.Column("from_step_id", BigId, nullable=False),
        sa.Column("to_step_id", BigId, nullable=False),
        sa.Column("task_id", BigId, nullable=False),
        sa.ForeignKeyConstraint(
            ["from_step_id"],
            ["tasker_workflow_steps.workflow_step_id"],
            name=op.f("fk_tasker_workflow_step_edges_from_step_id_tasker_workflow_steps"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["to_step_id"],
            ["tasker_workflow_steps.workflow_step_id"],
            name=op.f("fk_tasker_workflow_step_edges_to_step_id_tasker_workflow_steps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "from_step_id", "to_step_id", name=op.f("pk_tasker_workflow_step_edges")
        ),
    )
    with op.batch_alter_table("tasker_workflow_step_edges", schema=None) as batch_op:
        batch_op.create_index("ix_tasker_workflow_step_edges_task_id", ["task_id"], unique=False)
        batch_op.create_index(
            "ix_tasker_workflow_step_edges_to_step_id", ["to_step_id"], unique=False
        )

    op.create_table(
        "tasker_workflow_step_transitions",
        sa.Column("transition_id", BigId, autoincrement=True, nullable=False),
        sa.Column("workflow_step_id", BigId, nullable=False),
        sa.Column("task_id", BigId, nullable=False),
        sa.Column("from_status", sa.String(length=24), nullable=True),
        sa.Column("to_status", sa.String(length=24), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("details", Json, nullable=True),
        sa.Column("tx_seq", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_step_id"],
            ["tasker_workflow_steps.workflow_step_id"],
            name=op.f("fk_tasker_workflow_step_transitions_workflow_step_id_tasker_workflow_steps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("transition_id", name=op.f("pk_tasker_workflow_step_transitions")),
    )
    with op.batch_alter_table("tasker_workflow_step_transitions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tasker_workflow_step_transitions_task_id",
            ["task_id", "transition_id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_tasker_workflow_step_transitions_workflow_step_id",
            ["workflow_step_id"],
            unique=False,
        )

    if op.get_bind().dialect.name == "postgresql":
        # JSON containment (`@>`) for annotation queries; SQLite has no counterpart.
        op.create_index(
            "ix_tasker_task_annotations_annotation",
            "tasker_task_annotations",
            ["annotation"],
            postgresql_using="gin",
            postgresql_ops={"annotation": "jsonb_path_ops"},
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_tasker_task_annotations_annotation", "tasker_task_annotations")
    with op.batch_alter_table("tasker_workflow_step_transitions", schema=None) as batch_op:
        batch_op.drop_index("ix_tasker_workflow_step_transitions_workflow_step_id")
        batch_op.drop_index("ix_tasker_workflow_step_transitions_task_id")

    op.drop_table("tasker_workflow_step_transitions")
    with op.batch_alter_table("tasker_workflow_step_edges", schema=None) as batch_op:
        batch_op.drop_index("ix_tasker_workflow_step_edges_to_step_id")
        batch_op.drop_index("ix_tasker_workflow_step_edges_task_id")

    op.drop_table("tasker_workflow_step_edges")
    with op.batch_alter_table("tasker_workflow_steps", schema=None) as batch_op:
        batch_op.drop_index("ix_tasker_workflow_steps_named_step_id_status")

    op.drop_table("tasker_workflow_steps")
    with op.batch_alter_table("tasker_task_transitions", schema=None) as batch_op:
        batch_op.drop_index("ix_tasker_task_transitions_task_id")

    op.drop_table("tasker_task_transitions")
    with op.batch_alter_table("tasker_task_annotations", schema=None) as batch_op:
        batch_op.drop_index("ix_tasker_task_annotations_task_id")
        batch_op.drop_index("ix_tasker_task_annotations_annotation_type_id")

    op.drop_table("tasker_task_annotations")
    with op.batch_alter_table("tasker_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasker_tasks_status_task_id")
        batch_op.drop_index("ix_tasker_tasks_named_task_id_task_id")
        batch_op.drop_index(
            "ix_tasker_tasks_due",
            postgresql_where=sa.text("status IN ('pending', 'in_progress')"),
            sqlite_where=sa.text("status IN ('pending', 'in_progress')"),
        )

    op.drop_table("tasker_tasks")
    op.drop_table("tasker_named_steps")
    with op.batch_alter_table("tasker_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_tasker_outbox_created_at")

    op.drop_table("tasker_outbox")
    op.drop_table("tasker_named_tasks")
    op.drop_table("tasker_dependent_systems")
    op.drop_table("tasker_annotation_types")
