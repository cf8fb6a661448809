"""One task per subject: the subject columns of a new task, and telling its conflicts apart.

A task of a `one_per_subject` handler stores its task name in `subject_scope` (NULL for
every other task); the partial unique index over (`subject_scope`, `subject`) then lets
one such task per name and subject exist, whatever its version. A trigger (see
`tasker.store.triggers`) sets `subject_scope` back to NULL when the task becomes final,
so a task in `error` (or `paused`) still holds its subject.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tasker.definition.registry import RegisteredTask
from tasker.definition.request import TaskRequest
from tasker.errors import DuplicateTaskError, InvalidRequestError
from tasker.store import schema as m
from tasker.store.db import Database, reading

T = m.tasks
_SUBJECT_LIMIT = 255


def subject_values(reg: RegisteredTask, req: TaskRequest) -> dict[str, Any]:
    """The `subject` and `subject_scope` columns of a new task.

    Raises:
        InvalidRequestError: the subject is not None or a non-empty string of at most
            255 characters.
    """
    subject = req.subject
    if subject is None:
        return {"subject": None, "subject_scope": None}
    if not isinstance(subject, str) or not subject or len(subject) > _SUBJECT_LIMIT:
        raise InvalidRequestError(
            f"subject must be None or a non-empty string of at most {_SUBJECT_LIMIT} "
            f"characters, got {subject!r}"
        )
    one = getattr(reg.handler, "one_per_subject", False) is True
    return {"subject": subject, "subject_scope": reg.name if one else None}


def is_subject_conflict(exc: IntegrityError) -> bool:
    """Whether an insert failed on the one-live-task-per-subject index (not another key)."""
    orig = getattr(exc, "orig", None)
    diag = getattr(orig, "diag", None)  # PostgreSQL names the constraint
    if diag is not None and getattr(diag, "constraint_name", None):
        return bool(diag.constraint_name == m.SUBJECT_INDEX)
    # SQLite names the columns: "UNIQUE constraint failed: tasker_tasks.subject_scope, ..."
    return "tasker_tasks.subject_scope" in str(orig)


def duplicate_of(
    db: Database, values: dict[str, Any], caller: Connection | None = None
) -> DuplicateTaskError | None:
    """The error naming the task that holds the subject now, or None if none does any more.

    None means the holder became final since the insert failed: try the insert again.
    """
    scope, subject = values.get("subject_scope"), values.get("subject")
    if scope is None:
        return None
    with reading(db, caller) as conn:
        holder = conn.execute(
            sa.select(T.c.task_id).where(T.c.subject_scope == scope, T.c.subject == subject)
        ).scalar()
    if holder is None:
        return None
    return DuplicateTaskError(
        f"task {scope!r} already has task {holder} for subject {subject!r} that is not "
        "finished (one_per_subject)",
        int(holder),
    )
