"""Turning a `TaskRequest` into a task, its steps and edges, in one transaction."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tasker.control.subjects import duplicate_of, is_subject_conflict, subject_values
from tasker.core import states
from tasker.core.clock import as_utc
from tasker.core.jsonvalue import json_problem
from tasker.core.states import Status
from tasker.core.views import StepView, TaskView
from tasker.definition.registry import RegisteredTask
from tasker.definition.request import TaskRequest
from tasker.errors import ContextValidationError, IdempotencyConflictError, InvalidRequestError
from tasker.store import schema as m
from tasker.store.base import Store
from tasker.store.catalog import Catalog
from tasker.store.db import Database


@dataclass(frozen=True)
class Accepted:
    """The outcome of an enqueue: the task id, and whether this call created it.

    A new task comes with its view (built from what was inserted, not read back).
    """

    task_id: int
    created: bool
    view: TaskView | None = None


def _new_view(
    reg: RegisteredTask,
    task_id: int,
    ids: dict[str, int],
    values: dict[str, Any],
    requested_at: datetime,
    now: datetime,
) -> TaskView:
    bypass = set(values["bypass_steps"])
    steps = {
        name: StepView(
            workflow_step_id=ids[name],
            name=name,
            status=(Status.SKIPPED if name in bypass else Status.PENDING).value,
            attempts=0,
            retry_limit=tpl.retry_limit,
            retryable=tpl.retryable,
            skippable=tpl.skippable,
            depends_on=tuple(sorted(tpl.depends_on)),
            dependent_system=tpl.dependent_system,
            inputs=values["context"],
            results=None,
            error=None,
            last_attempted_at=None,
            next_attempt_at=None,
        )
        for name, tpl in reg.steps.items()
    }
    return TaskView(
        task_id=task_id,
        name=reg.name,
        version=reg.version,
        status=Status.PENDING.value,
        context=values["context"],
        tags=values["tags"],
        initiator=values["initiator"],
        source_system=values["source_system"],
        reason=values["reason"],
        requested_at=requested_at,
        completed_at=None,
        idempotency_key=values["idempotency_key"],
        next_run_at=now,
        steps=steps,
        bypass_steps=values["bypass_steps"],
        subject=values["subject"],
        created_at=now,
    )


def _strings(field: str, value: Any) -> list[str]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value or ()):
        raise InvalidRequestError(f"{field} must be a list of strings, got {value!r}")
    return list(value or ())


def _text(field: str, value: Any, limit: int = 255) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidRequestError(f"{field} must be a string of at most {limit} characters")
    return value


def check_request(reg: RegisteredTask, req: TaskRequest) -> dict[str, Any]:
    """Validate a request against its handler and return the values to store.

    Raises:
        ContextValidationError: the context breaks the schema (`.errors` lists all).
        InvalidRequestError: any other field is invalid, or `bypass_steps` names a
            step that does not exist or is not skippable.
    """
    if not isinstance(req.context, dict):
        raise InvalidRequestError(f"context must be a dict, got {type(req.context).__name__}")
    problem = json_problem(req.context)
    if problem:
        raise InvalidRequestError(f"context cannot be stored as JSON: {problem}")
    violations = reg.schema_errors(req.context)
    if violations:
        raise ContextValidationError(reg.name, violations)
    bypass = _strings("bypass_steps", req.bypass_steps)
    unknown = [s for s in bypass if s not in reg.steps]
    if unknown:
        raise InvalidRequestError(
            f"bypass_steps names unknown step(s) {unknown} of task {reg.name!r}"
        )
    fixed = [s for s in bypass if not reg.steps[s].skippable]
    if fixed:
        raise InvalidRequestError(f"bypass_steps names step(s) {fixed} that are not skippable")
    key = req.idempotency_key
    if key is not None:
        _text("idempotency_key", key)
    if req.requested_at is not None and not isinstance(req.requested_at, datetime):
        raise InvalidRequestError("requested_at must be a datetime")
    subject = subject_values(reg, req)
    values = {
        "context": req.context,
        "tags": _strings("tags", req.tags),
        "bypass_steps": sorted(set(bypass)),
        "initiator": _text("initiator", req.initiator),
        "source_system": _text("source_system", req.source_system),
        "reason": _text("reason", req.reason),
        "idempotency_key": key,
    }
    values.update(subject)
    if key is not None:
        values["request_digest"] = request_digest(reg.name, req.version, values)
    return values


def request_digest(name: str, version: str | None, values: dict[str, Any]) -> str:
    """The digest of a request as its caller sent it, for comparing idempotent repeats.

    Args:
        name: the task name.
        version: the version as given (None, "the newest", stays None: a repeat of the
            request must match the first even after a newer version was registered).
        values: the checked values (`check_request`); the key itself is not part of it.
    """
    digest_of = {"name": name, "version": version, **values}
    digest_of.pop("idempotency_key", None)
    digest_of.pop("request_digest", None)
    digest_of.pop("subject_scope", None)
    if digest_of.get("subject") is None:  # so digests stored before subjects still match
        digest_of.pop("subject", None)
    canonical = json.dumps(digest_of, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_task(
    store: Store,
    db: Database,
    catalog: Catalog,
    reg: RegisteredTask,
    req: TaskRequest,
    now: datetime,
) -> Accepted:
    """Validate and store a task with its steps, edges, audit rows and outbox row.

    Nothing is stored when the request is invalid or conflicts.

    Raises:
        InvalidRequestError: see `check_request`.
        IdempotencyConflictError: the key was used before with a different request.
        sqlalchemy.exc.IntegrityError: the insert broke a constraint other than the
            idempotency key's (never reported as a key collision).
        DuplicateTaskError: a `one_per_subject` task holds the subject (and the key,
            if any, names no task).
    """
    values = check_request(reg, req)
    entry = catalog.entry(reg, now)
    requested_at = as_utc(req.requested_at) if req.requested_at else now
    steps = _initial_steps(reg, entry.named_step_ids, values, now)
    row = {**values, "named_task_id": entry.named_task_id, "requested_at": requested_at}
    for _ in range(3):
        if values["idempotency_key"] is not None:
            with db.read() as conn:
                existing = _by_key(conn, reg, req, values)
            if existing is not None:
                return existing
        try:
            task_id, step_ids = store.insert_task(row, steps, _edges(reg), now)
        except IntegrityError as exc:
            if is_subject_conflict(exc):
                existing = _subject_conflict(db, reg, req, values)
                if existing is not None:
                    return existing
                continue  # the holder became final meanwhile: the subject is free now
            if values["idempotency_key"] is None or not is_key_taken(exc):
                raise
            continue  # a concurrent request with the same key won the insert: answer as it did
        ids = dict(zip(reg.steps, step_ids, strict=True))
        return Accepted(task_id, True, _new_view(reg, task_id, ids, values, requested_at, now))
    raise InvalidRequestError("could not store the task: the idempotency key kept colliding")


def _subject_conflict(
    db: Database, reg: RegisteredTask, req: TaskRequest, values: dict[str, Any]
) -> Accepted | None:
    """The insert hit the one-live-task-per-subject index.

    The idempotency key is checked first: a concurrent request with the same key may
    have taken the subject, and answers as before. Else the holder is a duplicate.

    Returns:
        The key's task, or None when no task holds the subject any more.

    Raises:
        DuplicateTaskError: a task that is not final holds the subject.
        IdempotencyConflictError: the key's task was made by a different request.
    """
    if values["idempotency_key"] is not None:
        with db.read() as conn:
            existing = _by_key(conn, reg, req, values)
        if existing is not None:
            return existing
    duplicate = duplicate_of(db, values)
    if duplicate is not None:
        raise duplicate
    return None


#: The unique constraint of `tasks.idempotency_key` (named by the schema's convention).
KEY_CONSTRAINT = "uq_tasker_tasks_idempotency_key"
#: How SQLite names it in its message ("UNIQUE constraint failed: <table>.<column>").
_KEY_COLUMN = f"{m.tasks.name}.{m.tasks.c.idempotency_key.name}"


def is_key_taken(exc: IntegrityError) -> bool:
    """Tell whether an insert failed because its idempotency key is taken.

    Any other integrity error (another constraint, a foreign key) is a real error, not a
    concurrent repeat of the request.
    """
    diag = getattr(exc.orig, "diag", None)
    if diag is not None:  # psycopg names the violated constraint
        return getattr(diag, "constraint_name", None) == KEY_CONSTRAINT
    return f"UNIQUE constraint failed: {_KEY_COLUMN}" in str(exc.orig)


def _by_key(
    conn: Connection, reg: RegisteredTask, req: TaskRequest, values: dict[str, Any]
) -> Accepted | None:
    """The task stored under the request's key, if it was created by the same request.

    The same request is the same as sent. A version named by one and left out (None:
    the newest) by the other is the same too when both mean the stored task's version:
    the first left it out and it resolved to the version the repeat names, or the first
    named the version that the repeat's None still resolves to.

    Raises:
        IdempotencyConflictError: the key was used with a different request.
    """
    row = conn.execute(
        sa.select(m.tasks.c.task_id, m.tasks.c.request_digest, m.named_tasks.c.version)
        .join(m.named_tasks, m.tasks.c.named_task_id == m.named_tasks.c.named_task_id)
        .where(m.tasks.c.idempotency_key == values["idempotency_key"])
    ).first()
    if row is None:
        return None
    same = {values["request_digest"]}
    if req.version is not None and req.version == row.version:
        same.add(request_digest(reg.name, None, values))
    if req.version is None and reg.version == row.version:
        # (Also matches a digest stored before versions were kept as given: it held the
        # resolved version.)
        same.add(request_digest(reg.name, row.version, values))
    if row.request_digest not in same:
        raise IdempotencyConflictError(
            f"idempotency key {values['idempotency_key']!r} was used by task {row.task_id} "
            "with a different request"
        )
    return Accepted(int(row.task_id), False)


def _initial_steps(
    reg: RegisteredTask, named_step_ids: dict[str, int], values: dict[str, Any], now: datetime
) -> list[dict[str, Any]]:
    """The first state of each step, in position order, checked by the state machine."""
    bypass = set(values["bypass_steps"])
    rows = []
    for position, (name, tpl) in enumerate(reg.steps.items()):
        status = Status.SKIPPED if name in bypass else Status.PENDING
        states.check_step(name, None, status)
        rows.append(
            {
                "named_step_id": named_step_ids[name],
                "position": position,
                "status": status.value,
                "retryable": tpl.retryable,
                "retry_limit": tpl.retry_limit,
                "skippable": tpl.skippable,
                "processed_at": now if name in bypass else None,
                "reason": "bypassed by request" if name in bypass else "created",
            }
        )
    return rows


def _edges(reg: RegisteredTask) -> list[tuple[int, int]]:
    """(parent, child) positions of every dependency."""
    position = {name: i for i, name in enumerate(reg.steps)}
    return [
        (position[dep], position[name]) for name, tpl in reg.steps.items() for dep in tpl.depends_on
    ]
