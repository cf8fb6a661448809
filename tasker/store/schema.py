"""The database schema: one place, mirrored by the Alembic migrations.

Tables are SQLAlchemy Core (the engine writes with short, explicit statements).
JSON columns are JSONB on PostgreSQL and JSON text on SQLite. On PostgreSQL the
migrations also give tasks and steps a fillfactor of 80 (updates stay on their page).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from tasker.core.states import Status

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)

Json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identities.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)

_STATUSES = ", ".join(f"'{s.value}'" for s in Status)
#: Live tasks, as SQL: the due index's condition, and the due queries' (written out, not a
#: bound parameter, so that SQLite's planner can use the partial index).
LIVE_SQL = f"status IN ('{Status.PENDING.value}', '{Status.IN_PROGRESS.value}')"
#: Final tasks (nothing more happens to them), as SQL: the retention purge's index and query.
FINAL_SQL = "status IN ('complete', 'cancelled', 'resolved_manually')"
#: Paused tasks with a deadline, as SQL: no engine pass wakes them at it (the sweeper does).
PAUSED_DEADLINE_SQL = "status = 'paused' AND deadline_at IS NOT NULL"
#: The unique index that holds one live task per (task name, subject): see `subject_scope`.
SUBJECT_INDEX = "uq_tasker_tasks_live_subject"


def _status() -> sa.CheckConstraint:
    return sa.CheckConstraint(f"status IN ({_STATUSES})", name="status")


named_tasks = sa.Table(
    "tasker_named_tasks",
    metadata,
    sa.Column("named_task_id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", When, nullable=False),
    sa.UniqueConstraint("name", "version"),
)

dependent_systems = sa.Table(
    "tasker_dependent_systems",
    metadata,
    sa.Column("dependent_system_id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("created_at", When, nullable=False),
)

named_steps = sa.Table(
    "tasker_named_steps",
    metadata,
    sa.Column("named_step_id", sa.Integer, primary_key=True),
    sa.Column(
        "dependent_system_id",
        sa.Integer,
        sa.ForeignKey("tasker_dependent_systems.dependent_system_id"),
        nullable=False,
    ),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", When, nullable=False),
    sa.UniqueConstraint("dependent_system_id", "name"),
)

tasks = sa.Table(
    "tasker_tasks",
    metadata,
    sa.Column("task_id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "named_task_id",
        sa.Integer,
        sa.ForeignKey("tasker_named_tasks.named_task_id"),
        nullable=False,
    ),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("context", Json, nullable=False),
    sa.Column("tags", Json, nullable=False),
    sa.Column("bypass_steps", Json, nullable=False),
    sa.Column("initiator", sa.String(255), nullable=False),
    sa.Column("source_system", sa.String(255), nullable=False),
    sa.Column("reason", sa.String(255), nullable=False),
    sa.Column("idempotency_key", sa.String(255), nullable=True),
    sa.Column("request_digest", sa.String(64), nullable=True),
    sa.Column("requested_at", When, nullable=False),
    sa.Column("created_at", When, nullable=False),
    sa.Column("updated_at", When, nullable=False),
    sa.Column("completed_at", When, nullable=True),
    # Scheduling: when the engine should next look at the task (NULL once finished).
    sa.Column("next_run_at", When, nullable=True),
    # The last time a message was sent for it by the sweeper (re-dispatch throttle).
    sa.Column("dispatched_at", When, nullable=True),
    # The lease: who runs it now, until when, and the fencing epoch.
    sa.Column("lease_owner", sa.String(128), nullable=True),
    sa.Column("lease_expires_at", When, nullable=True),
    sa.Column("lease_epoch", sa.Integer, nullable=False, server_default="0"),
    # Bumped by every steering call, so a running engine knows to re-read the steps.
    sa.Column("revision", sa.Integer, nullable=False, server_default="0"),
    # Bumped by every transaction that changes the task: orders its audit trail.
    sa.Column("tx_seq", sa.Integer, nullable=False, server_default="0"),
    # What the task is about (`TaskRequest.subject`).
    sa.Column("subject", sa.String(255), nullable=True),
    # The task name while a `one_per_subject` task is not final, else NULL: with `subject`
    # it is unique (all versions of a name share it). A trigger of migration 0007 sets it
    # back to NULL whenever the task becomes final, whoever writes that status.
    sa.Column("subject_scope", sa.String(128), nullable=True),
    # Sub-tasks (`step.spawn`): the task and step that spawned this one, under which key
    # (unique per step: a retried attempt spawning the same key gets the same child), and
    # whether that step waits for it. NULL for a task no step spawned.
    sa.Column("parent_task_id", BigId, nullable=True),
    sa.Column("parent_step_id", BigId, nullable=True),
    sa.Column("spawn_key", sa.String(255), nullable=True),
    sa.Column("parent_waits", sa.Boolean, nullable=True),
    # The W3C trace context its enqueue ran in, as JSON (`tasker.engine.tracing`): every
    # pass continues that trace. NULL unless tracing is on.
    sa.Column("trace_context", sa.Text, nullable=True),
    # `TaskHandler.timeout`: the task ends in `error` if it is not finished by then.
    sa.Column("deadline_at", When, nullable=True),
    # Why the task itself ended in `error` (a timeout), as `TaskView.error`; NULL otherwise.
    sa.Column("error", Json, nullable=True),
    # `on_finish` is owed for the task's last ending: due (to the sweeper) from then; NULL
    # once it ran. The one who runs it first moves it a lease period on (`finishing`).
    sa.Column("finish_due_at", When, nullable=True),
    _status(),
    sa.UniqueConstraint("idempotency_key"),
    sa.Index(
        "ix_tasker_tasks_due",
        "next_run_at",
        postgresql_where=sa.text(LIVE_SQL),
        sqlite_where=sa.text(LIVE_SQL),
    ),
    sa.Index("ix_tasker_tasks_status_task_id", "status", "task_id"),
    sa.Index("ix_tasker_tasks_named_task_id_task_id", "named_task_id", "task_id"),
    sa.Index(
        SUBJECT_INDEX,
        "subject_scope",
        "subject",
        unique=True,
        postgresql_where=sa.text("subject_scope IS NOT NULL"),
        sqlite_where=sa.text("subject_scope IS NOT NULL"),
    ),
    sa.Index(
        "ix_tasker_tasks_subject_task_id",
        "subject",
        "task_id",
        postgresql_where=sa.text("subject IS NOT NULL"),
        sqlite_where=sa.text("subject IS NOT NULL"),
    ),
    # A task's children in spawn order (`TaskView.children`, cascades of cancel and retry).
    sa.Index(
        "ix_tasker_tasks_parent_task_id_task_id",
        "parent_task_id",
        "task_id",
        postgresql_where=sa.text("parent_task_id IS NOT NULL"),
        sqlite_where=sa.text("parent_task_id IS NOT NULL"),
    ),
    # One child per (step, key).
    sa.Index(
        "uq_tasker_tasks_parent_step_id_spawn_key",
        "parent_step_id",
        "spawn_key",
        unique=True,
        postgresql_where=sa.text("parent_step_id IS NOT NULL"),
        sqlite_where=sa.text("parent_step_id IS NOT NULL"),
    ),
    # The awaiting step's probes of its children by status (`awaited_children`): a wake
    # reads one entry, not one per child.
    sa.Index(
        "ix_tasker_tasks_parent_step_waits_status",
        "parent_step_id",
        "parent_waits",
        "status",
        "task_id",
        postgresql_where=sa.text("parent_step_id IS NOT NULL"),
        sqlite_where=sa.text("parent_step_id IS NOT NULL"),
    ),
    # The sweeper's scans: finish callbacks owed, and paused tasks that reach their deadline.
    sa.Index(
        "ix_tasker_tasks_finish_due_at",
        "finish_due_at",
        postgresql_where=sa.text("finish_due_at IS NOT NULL"),
        sqlite_where=sa.text("finish_due_at IS NOT NULL"),
    ),
    sa.Index(
        "ix_tasker_tasks_paused_deadline_at",
        "deadline_at",
        postgresql_where=sa.text(PAUSED_DEADLINE_SQL),
        sqlite_where=sa.text(PAUSED_DEADLINE_SQL),
    ),
    # The retention purge: final tasks, oldest completion first.
    sa.Index(
        "ix_tasker_tasks_completed_at",
        "completed_at",
        postgresql_where=sa.text(FINAL_SQL),
        sqlite_where=sa.text(FINAL_SQL),
    ),
)

workflow_steps = sa.Table(
    "tasker_workflow_steps",
    metadata,
    sa.Column("workflow_step_id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "task_id", BigId, sa.ForeignKey("tasker_tasks.task_id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column(
        "named_step_id",
        sa.Integer,
        sa.ForeignKey("tasker_named_steps.named_step_id"),
        nullable=False,
    ),
    sa.Column("position", sa.Integer, nullable=False),  # topological order within the task
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("retryable", sa.Boolean, nullable=False),
    sa.Column("retry_limit", sa.Integer, nullable=False),
    sa.Column("skippable", sa.Boolean, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    # What the handler sees as `step.inputs`; NULL: the task's context. A person may set
    # it on a step that has not completed, and the next attempt sees it.
    sa.Column("inputs", Json, nullable=True),
    sa.Column("results", Json, nullable=True),
    sa.Column("error", Json, nullable=True),
    sa.Column("last_attempted_at", When, nullable=True),
    # The step's "not before" time. In `error`: its next attempt's (NULL: no attempt
    # left); in `pending`: a wait's, or a reattempt's (NULL: it may start once ready).
    sa.Column("next_attempt_at", When, nullable=True),
    sa.Column("processed_at", When, nullable=True),
    sa.Column("created_at", When, nullable=False),
    sa.Column("updated_at", When, nullable=False),
    # Runs that asked to run again later (`step.reattempt`): never counted in `attempts`.
    sa.Column("reattempts", sa.Integer, nullable=False, server_default="0"),
    # The event this step waits for (`StepTemplate.wait_for`), from the DAG the task was
    # created with: `app.signal` checks names against it, and reads show the wait.
    sa.Column("wait_for", sa.String(128), nullable=True),
    # What an `in_progress` step whose handler has returned awaits (`tasker.core.states`
    # AWAITING: "children", "items"); NULL while its handler runs (or once it finished).
    sa.Column("awaiting", sa.String(16), nullable=True),
    _status(),
    sa.UniqueConstraint("task_id", "position"),
)

# The step columns, declared once. A column of `workflow_steps` that is also a field of
# `tasker.core.views.StepView` is read into every view of a step (`tasker.store.steps`);
# the stores derive their statements from the two tuples below, so a new step column is
# the column above, its field in `StepView`, its migration and, if enqueue or the
# engine set it, its name here.

#: The step columns an enqueue sets, from each step's first state (`Store.insert_tasks`);
#: `task_id`, `attempts` (0), `created_at` and `updated_at` are set by the store.
STEP_CREATE = (
    "named_step_id",
    "position",
    "status",
    "retryable",
    "retry_limit",
    "skippable",
    "processed_at",
    "wait_for",
)
#: The step columns an engine write sets from its view of each step it changes
#: (`Store.apply`; `updated_at` is set by the store).
STEP_WRITE = (
    "status",
    "attempts",
    "results",
    "error",
    "last_attempted_at",
    "next_attempt_at",
    "processed_at",
    "reattempts",
    "awaiting",
)

step_edges = sa.Table(
    "tasker_workflow_step_edges",
    metadata,
    sa.Column(
        "from_step_id",
        BigId,
        sa.ForeignKey("tasker_workflow_steps.workflow_step_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column(
        "to_step_id",
        BigId,
        sa.ForeignKey("tasker_workflow_steps.workflow_step_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("task_id", BigId, nullable=False),
    sa.Index("ix_tasker_workflow_step_edges_task_id", "task_id"),
    sa.Index("ix_tasker_workflow_step_edges_to_step_id", "to_step_id"),
)

step_transitions = sa.Table(
    "tasker_workflow_step_transitions",
    metadata,
    sa.Column("transition_id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "workflow_step_id",
        BigId,
        sa.ForeignKey("tasker_workflow_steps.workflow_step_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("task_id", BigId, nullable=False),
    sa.Column("from_status", sa.String(24), nullable=True),
    sa.Column("to_status", sa.String(24), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("reason", sa.String(255), nullable=False),
    sa.Column("details", Json, nullable=True),  # the attempt's error, kept for every attempt
    sa.Column("tx_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", When, nullable=False),
    sa.Index("ix_tasker_workflow_step_transitions_task_id", "task_id", "transition_id"),
    sa.Index("ix_tasker_workflow_step_transitions_workflow_step_id", "workflow_step_id"),
)

task_transitions = sa.Table(
    "tasker_task_transitions",
    metadata,
    sa.Column("transition_id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "task_id", BigId, sa.ForeignKey("tasker_tasks.task_id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("from_status", sa.String(24), nullable=True),
    sa.Column("to_status", sa.String(24), nullable=False),
    sa.Column("reason", sa.String(255), nullable=False),
    sa.Column("tx_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", When, nullable=False),
    sa.Index("ix_tasker_task_transitions_task_id", "task_id", "transition_id"),
)

annotation_types = sa.Table(
    "tasker_annotation_types",
    metadata,
    sa.Column("annotation_type_id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", When, nullable=False),
)

task_annotations = sa.Table(
    "tasker_task_annotations",
    metadata,
    sa.Column("task_annotation_id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "task_id", BigId, sa.ForeignKey("tasker_tasks.task_id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column(
        "annotation_type_id",
        sa.Integer,
        sa.ForeignKey("tasker_annotation_types.annotation_type_id"),
        nullable=False,
    ),
    sa.Column("annotation", Json, nullable=False),
    sa.Column("created_at", When, nullable=False),
    sa.Index("ix_tasker_task_annotations_task_id", "task_id"),
    sa.Index("ix_tasker_task_annotations_annotation_type_id", "annotation_type_id"),
)
# JSON containment (`@>`) on PostgreSQL; SQLite has no counterpart to a GIN index.
sa.Index(
    "ix_tasker_task_annotations_annotation",
    task_annotations.c.annotation,
    postgresql_using="gin",
    postgresql_ops={"annotation": "jsonb_path_ops"},
).ddl_if(dialect="postgresql")

# Messages to send, written in the same transaction as the change they announce.
outbox = sa.Table(
    "tasker_outbox",
    metadata,
    sa.Column("outbox_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("task_id", BigId, nullable=False),
    sa.Column("deliver_at", When, nullable=False),
    sa.Column("created_at", When, nullable=False),
    sa.Index("ix_tasker_outbox_deliver_at", "deliver_at"),  # the sweeper's scan of stale rows
    sa.Index("ix_tasker_outbox_task_id", "task_id"),  # each claim deletes its task's rows
)

# Durable schedules (`Tasker.schedule`): each due tick enqueues one task.
schedules = sa.Table(
    "tasker_schedules",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("request", Json, nullable=False),  # the TaskRequest's fields
    sa.Column("cron", sa.String(255), nullable=True),
    sa.Column("every_seconds", sa.Float, nullable=True),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("next_tick", When, nullable=False),
    sa.Column("created_at", When, nullable=False),
    sa.Column("updated_at", When, nullable=False),
    sa.Index("ix_tasker_schedules_next_tick", "next_tick"),
)

# Events signalled to a task (`Tasker.signal`), kept in order until a step consumes one:
# the engine reads a task's events by `task_id` (the index serves it and, with `name`,
# the lookup of the oldest unconsumed event of a name that wakes a waiting step).
events = sa.Table(
    "tasker_events",
    metadata,
    sa.Column("event_id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "task_id", BigId, sa.ForeignKey("tasker_tasks.task_id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("payload", Json, nullable=True),
    sa.Column("created_at", When, nullable=False),
    # The step that consumed it (NULL: not consumed yet), and when.
    sa.Column("consumed_by", BigId, nullable=True),
    sa.Column("consumed_at", When, nullable=True),
    sa.Index("ix_tasker_events_task_id_name_event_id", "task_id", "name", "event_id"),
)

# SQLite has no sequences: the task ids handed out ahead of their rows (`step.spawn`)
# come from this counter, which every SQLite insert of tasks also moves past (see
# `tasker.store.ids`). PostgreSQL uses the tasks' own id sequence.
id_counters = sa.Table(
    "tasker_id_counters",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("last_id", sa.BigInteger, nullable=False),
)

# The items of a `for_each` step: the list its `for_each` returned (stored once, when the
# step first starts) and each item's own state, a row per item, written in batches by
# the step's item runner (`tasker.engine.items`) under the task's lease.
step_items = sa.Table(
    "tasker_step_items",
    metadata,
    sa.Column(
        "workflow_step_id",
        BigId,
        sa.ForeignKey("tasker_workflow_steps.workflow_step_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("item_index", sa.Integer, primary_key=True),
    sa.Column("task_id", BigId, nullable=False),
    sa.Column("item", Json, nullable=True),
    # pending, in_progress (an attempt runs, counted in `attempts`), complete or error
    # (`next_attempt_at` is its retry's due time; NULL: no attempt left).
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("results", Json, nullable=True),
    sa.Column("error", Json, nullable=True),
    sa.Column("next_attempt_at", When, nullable=True),
    sa.Column("updated_at", When, nullable=False),
    sa.Index("ix_tasker_step_items_task_id", "task_id"),
)

# Limits per dependent system (`Tasker.limit`): at most `concurrency` steps of the system
# run at once and at most `per_second` start in any second, across all workers.
limits = sa.Table(
    "tasker_limits",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("concurrency", sa.Integer, nullable=True),
    sa.Column("per_second", sa.Integer, nullable=True),
    sa.Column("updated_at", When, nullable=False),
)

# The slots taken under a limit: a row per step attempt that started, held until its
# outcome (`released_at`) or until `expires_at` (its worker's lease: a killed worker's
# slots come back). Released rows stay a second, for `per_second`.
limit_holds = sa.Table(
    "tasker_limit_holds",
    metadata,
    sa.Column("workflow_step_id", BigId, primary_key=True),
    sa.Column("task_id", BigId, nullable=False),
    sa.Column("system", sa.String(128), nullable=False),
    sa.Column("started_at", When, nullable=False),
    sa.Column("expires_at", When, nullable=False),
    sa.Column("released_at", When, nullable=True),
    sa.Index("ix_tasker_limit_holds_system_started_at", "system", "started_at"),
    sa.Index("ix_tasker_limit_holds_task_id", "task_id"),
)

# Steps held back by a limit (`waiting_for="limit"`): a freed slot nudges their tasks.
limit_waits = sa.Table(
    "tasker_limit_waits",
    metadata,
    sa.Column("workflow_step_id", BigId, primary_key=True),
    sa.Column("task_id", BigId, nullable=False),
    sa.Column("system", sa.String(128), nullable=False),
    sa.Column("created_at", When, nullable=False),
    sa.Index("ix_tasker_limit_waits_system", "system"),
    sa.Index("ix_tasker_limit_waits_task_id", "task_id"),
)
