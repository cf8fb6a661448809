"""Database triggers on `tasker_tasks`, the same for every writer of a task's status.

Two facts follow every status change, whoever writes it (the engine's fenced write,
a steering call, a future one), so they live in the database rather than in each
writer:

- a task that becomes final releases its subject (`subject_scope` back to NULL), so
  a new `one_per_subject` task may take it;
- on PostgreSQL, a task that stops running (final, `error`, or any other status that
  is not `pending`/`in_progress`, like `paused`) sends `NOTIFY tasker_task_done` with
  its id, which `Tasker.wait` listens for.

Migration 0007 creates them. A later migration that rebuilds `tasker_tasks` on SQLite
(a batch table recreate drops the table's triggers) must call `create` again.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

#: The channel `Tasker.wait` listens on; the payload is the task id.
DONE_CHANNEL = "tasker_task_done"

_FINAL = "('complete', 'cancelled', 'resolved_manually')"
_RUNNING = "('pending', 'in_progress')"

_PG_CREATE = (
    """
CREATE OR REPLACE FUNCTION tasker_release_subject() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.subject_scope := NULL;
    RETURN NEW;
END $$
""",
    "DROP TRIGGER IF EXISTS tasker_release_subject ON tasker_tasks",
    f"""
CREATE TRIGGER tasker_release_subject BEFORE UPDATE OF status ON tasker_tasks
FOR EACH ROW WHEN (NEW.subject_scope IS NOT NULL AND NEW.status IN {_FINAL})
EXECUTE FUNCTION tasker_release_subject()
""",
    f"""
CREATE OR REPLACE FUNCTION tasker_notify_task_done() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{DONE_CHANNEL}', NEW.task_id::text);
    RETURN NULL;
END $$
""",
    "DROP TRIGGER IF EXISTS tasker_notify_task_done ON tasker_tasks",
    f"""
CREATE TRIGGER tasker_notify_task_done AFTER UPDATE OF status ON tasker_tasks
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status NOT IN {_RUNNING})
EXECUTE FUNCTION tasker_notify_task_done()
""",
)

_PG_DROP = (
    "DROP TRIGGER IF EXISTS tasker_notify_task_done ON tasker_tasks",
    "DROP FUNCTION IF EXISTS tasker_notify_task_done()",
    "DROP TRIGGER IF EXISTS tasker_release_subject ON tasker_tasks",
    "DROP FUNCTION IF EXISTS tasker_release_subject()",
)

# SQLite cannot assign NEW in a trigger: the row is updated again, by primary key. That
# update does not name `status`, so it does not fire the trigger again.
_SQLITE_CREATE = (
    f"""
CREATE TRIGGER IF NOT EXISTS tasker_release_subject AFTER UPDATE OF status ON tasker_tasks
FOR EACH ROW WHEN NEW.subject_scope IS NOT NULL AND NEW.status IN {_FINAL}
BEGIN
    UPDATE tasker_tasks SET subject_scope = NULL WHERE task_id = NEW.task_id;
END
""",
)

_SQLITE_DROP = ("DROP TRIGGER IF EXISTS tasker_release_subject",)


def create(conn: Connection) -> None:
    """Create (or replace) the triggers on the connection's database."""
    for sql in _PG_CREATE if conn.dialect.name == "postgresql" else _SQLITE_CREATE:
        conn.exec_driver_sql(sql)


def drop(conn: Connection) -> None:
    """Drop the triggers (and, on PostgreSQL, their functions)."""
    for sql in _PG_DROP if conn.dialect.name == "postgresql" else _SQLITE_DROP:
        conn.exec_driver_sql(sql)
