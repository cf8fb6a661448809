"""Turning a `TaskRequest` into a task, its steps and edges, in one transaction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tasker.control.caller import begin_writes
from tasker.control.subjects import duplicate_of, is_subject_conflict, subject_values
from tasker.core import states
from tasker.core.clock import as_utc
from tasker.core.jsonvalue import json_problem
from tasker.core.states import Status
from tasker.core.views import StepView, TaskView
from tasker.core.waits import waiting_for
from tasker.definition.registry import RegisteredTask
from tasker.definition.request import TaskRequest
from tasker.engine import tracing
from tasker.errors import ContextValidationError, IdempotencyConflictError, InvalidRequestError
from tasker.store import schema as m
from tasker.store.base import NewTask, Store
from tasker.store.catalog import Catalog
from tasker.store.db import Database, reading


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
    skipped, pending = Status.SKIPPED.value, Status.PENDING.value
    statuses = {name: skipped if name in bypass else pending for name in reg.steps}
    steps = {}
    for name, tpl in reg.steps.items():
        status = statuses[name]
        depends_on = tuple(sorted(tpl.depends_on))
        ready = all(statuses[d] == skipped for d in depends_on)  # only a skip satisfies one
        steps[name] = StepView(
            workflow_step_id=ids[name],
            name=name,
            status=status,
            attempts=0,
            retry_limit=tpl.retry_limit,
            retryable=tpl.retryable,
            skippable=tpl.skippable,
            depends_on=depends_on,
            dependent_system=tpl.dependent_system,
            inputs=values["context"],
            results=None,
            error=None,
            last_attempted_at=None,
            next_attempt_at=None,
            processed_at=now if name in bypass else None,
            wait_for=tpl.wait_for,
            waiting_for=waiting_for(status, ready, None, pending, None, tpl.wait_for),
        )
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
        deadline_at=None if reg.timeout is None else now + timedelta(seconds=reg.timeout),
        annotations=[],  # as get_task reads them: the view equals the stored task's
    )


def _strings(field: str, value: Any) -> list[str]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value or ()):
        raise InvalidRequestError(f"{field} must be a list of strings, got {value!r}")
    return [_storable(field, v) for v in value or ()]


def _text(field: str, value: Any, limit: int = 255) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidRequestError(f"{field} must be a string of at most {limit} characters")
    return _storable(field, value)


def _storable(field: str, value: str) -> str:
    # NUL or a lone surrogate: no text column can hold it (PostgreSQL raises DataError).
    problem = json_problem(value, field)
    if problem:
        raise InvalidRequestError(f"{field} cannot be stored: {problem}")
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


@dataclass(frozen=True)
class _Checked:
    """One request of a call, checked: what to insert for it."""

    index: int
    reg: RegisteredTask
    req: TaskRequest
    values: dict[str, Any]
    requested_at: datetime
    new: NewTask

    @property
    def key(self) -> str | None:
        key: str | None = self.values["idempotency_key"]
        return key


def tag_request(exc: BaseException, index: int) -> None:
    """Say which request of an `enqueue_many` call an error is about.

    Sets `InvalidRequestError.request_index` and, on Python 3.11+, adds a note.
    """
    if isinstance(exc, InvalidRequestError):
        exc.request_index = index
    add_note = getattr(exc, "add_note", None)
    if add_note is not None:
        add_note(f"(request {index} of the batch)")


def create_task(
    store: Store,
    db: Database,
    catalog: Catalog,
    reg: RegisteredTask,
    req: TaskRequest,
    now: datetime,
    caller: Connection | None = None,
) -> Accepted:
    """Validate and store a task with its steps, edges, audit rows and outbox row.

    `create_tasks` with one request; its errors name no request index.
    """
    return create_tasks(store, db, catalog, [(reg, req)], now, batch=False, caller=caller)[0]


def create_tasks(
    store: Store,
    db: Database,
    catalog: Catalog,
    items: Sequence[tuple[RegisteredTask, TaskRequest]],
    now: datetime,
    *,
    batch: bool = True,
    caller: Connection | None = None,
) -> list[Accepted]:
    """Validate and store tasks (steps, edges, audit and outbox rows), all or none.

    Every request is checked before anything is written; the new tasks are written by
    one `Store.insert_tasks`. A request whose idempotency key names a stored task (or an
    earlier request of the same call) is answered with that task, and stores nothing.

    Args:
        store: the hot writes.
        db: the database (for the key and subject look-ups).
        catalog: the named tasks and steps.
        items: each request with its registered task.
        now: the time of the change.
        batch: whether the errors say which request they are about (`tag_request`).
        caller: the caller's connection (`check_caller`): everything is read and written
            through it, in its transaction, and left uncommitted; a savepoint takes back
            what this call wrote when it raises, so the caller's transaction goes on.

    Returns:
        One `Accepted` per request, in order.

    Raises:
        InvalidRequestError: see `check_request`; two requests of the call use one key
            for different requests, or ask for the same subject of a `one_per_subject`
            task.
        IdempotencyConflictError: a key was used before with a different request.
        sqlalchemy.exc.IntegrityError: the insert broke a constraint other than the
            idempotency key's (never reported as a key collision).
        DuplicateTaskError: a `one_per_subject` task holds a subject (and the key,
            if any, names no task).
    """
    valid = [_valid(reg, req, i, batch) for i, (reg, req) in enumerate(items)]
    if caller is None:
        return _store(store, db, catalog, items, valid, now, batch, None)
    begin_writes(caller)
    with caller.begin_nested():
        return _store(store, db, catalog, items, valid, now, batch, caller)


def _store(
    store: Store,
    db: Database,
    catalog: Catalog,
    items: Sequence[tuple[RegisteredTask, TaskRequest]],
    valid: Sequence[dict[str, Any]],
    now: datetime,
    batch: bool,
    caller: Connection | None,
) -> list[Accepted]:
    """`create_tasks` once every request is valid (`valid`: their checked values)."""
    checked = [
        _build(catalog, reg, req, values, now, i, caller)
        for i, ((reg, req), values) in enumerate(zip(items, valid, strict=True))
    ]
    repeat_of = _repeats_within(checked, batch)
    firsts = [c for c in checked if c.index not in repeat_of]
    for _ in range(3):
        answered = _by_keys(db, firsts, batch, caller)
        todo = [c for c in firsts if c.index not in answered]
        try:
            # In the caller's transaction, a savepoint: PostgreSQL aborts a transaction
            # on an error, and a taken key or subject is answered below.
            with nullcontext() if caller is None else caller.begin_nested():
                stored = store.insert_tasks([c.new for c in todo], now, caller) if todo else []
        except IntegrityError as exc:
            if is_subject_conflict(exc):
                _raise_duplicate(db, todo, batch, caller)
                continue  # a key's task took the subject, or its holder became final
            if all(c.key is None for c in todo) or not is_key_taken(exc):
                raise
            continue  # a concurrent request with the same key won the insert: answer as it did
        for c, (task_id, step_ids) in zip(todo, stored, strict=True):
            ids = dict(zip(c.reg.steps, step_ids, strict=True))
            view = _new_view(c.reg, task_id, ids, c.values, c.requested_at, now)
            answered[c.index] = Accepted(task_id, True, view)
        for index, first in repeat_of.items():
            answered[index] = Accepted(answered[first].task_id, False)
        return [answered[c.index] for c in checked]
    raise InvalidRequestError("could not store the task: the idempotency key kept colliding")


def checked_task(
    catalog: Catalog,
    reg: RegisteredTask,
    req: TaskRequest,
    values: dict[str, Any],
    now: datetime,
    extra: dict[str, Any],
    caller: Connection | None = None,
) -> NewTask:
    """The row of a checked task, stored later by someone else.

    `values` is what `check_request` gave. For `step.spawn`: the child is inserted with
    its parent's outcome.

    Args:
        extra: more task columns (the child's id and parent, see `NewTask`).
        caller: a connection in an open transaction for the catalog rows it may need.
    """
    built = _build(catalog, reg, req, values, now, 0, caller).new
    return NewTask({**built.values, **extra}, built.steps, built.edges)


def _valid(reg: RegisteredTask, req: TaskRequest, index: int, batch: bool) -> dict[str, Any]:
    """`check_request`, its error naming the request of a batch."""
    try:
        return check_request(reg, req)
    except InvalidRequestError as exc:
        if batch:
            tag_request(exc, index)
        raise


def _build(
    catalog: Catalog,
    reg: RegisteredTask,
    req: TaskRequest,
    values: dict[str, Any],
    now: datetime,
    index: int,
    caller: Connection | None,
) -> _Checked:
    entry = catalog.entry(reg, now, caller)
    requested_at = as_utc(req.requested_at) if req.requested_at else now
    row = {
        "request_digest": None,  # every row of a batch has the same columns
        **values,
        "named_task_id": entry.named_task_id,
        "requested_at": requested_at,
        # `created_at` is `now` too: the deadline is a full timeout after it.
        "deadline_at": None if reg.timeout is None else now + timedelta(seconds=reg.timeout),
        "trace_context": tracing.carrier(),  # the trace of this call (or spawning step)
    }
    steps = _initial_steps(reg, entry.named_step_ids, values, now)
    return _Checked(index, reg, req, values, requested_at, NewTask(row, steps, _edges(reg)))


def _repeats_within(checked: Sequence[_Checked], batch: bool) -> dict[int, int]:
    """Requests of one call that repeat an earlier one's key: index -> the first's index.

    Raises:
        IdempotencyConflictError: two requests use one key for different requests.
        InvalidRequestError: two requests ask for one subject of a `one_per_subject` task.
    """
    first_by_key: dict[str, _Checked] = {}
    subjects: dict[tuple[str, str], int] = {}
    repeat_of: dict[int, int] = {}
    for c in checked:
        error: InvalidRequestError | None = None
        if c.key is not None and c.key in first_by_key:
            first = first_by_key[c.key]
            # Resolved at the same time, both name the same version if they mean one.
            if _resolved_digest(first) == _resolved_digest(c):
                repeat_of[c.index] = first.index
                continue
            error = IdempotencyConflictError(
                f"idempotency key {c.key!r} is used by requests {first.index} and {c.index} "
                "with different requests"
            )
        scope, subject = c.values.get("subject_scope"), c.values.get("subject")
        if error is None and scope is not None and subject is not None:
            earlier = subjects.setdefault((scope, subject), c.index)
            if earlier != c.index:
                error = InvalidRequestError(
                    f"requests {earlier} and {c.index} both ask for subject {subject!r} of "
                    f"task {scope!r}, which allows one live task per subject (one_per_subject)"
                )
        if error is not None:
            if batch:
                tag_request(error, c.index)
            raise error
        if c.key is not None:
            first_by_key[c.key] = c
    return repeat_of


def _resolved_digest(c: _Checked) -> str:
    return request_digest(c.reg.name, c.reg.version, c.values)


def _by_keys(
    db: Database, checked: Sequence[_Checked], batch: bool, caller: Connection | None
) -> dict[int, Accepted]:
    """The stored tasks that answer requests with a key, by request index (one query).

    Raises:
        IdempotencyConflictError: a key was used with a different request.
    """
    keyed = [c for c in checked if c.key is not None]
    if not keyed:
        return {}
    keys = [c.key for c in keyed if c.key is not None]
    stored = _keyed_rows(db, keys, caller)
    answered: dict[int, Accepted] = {}
    for c in keyed:
        row = stored.get(c.key or "")
        if row is None:
            continue
        try:
            answered[c.index] = _same_request(c.reg, c.req, c.values, row)
        except IdempotencyConflictError as exc:
            if batch:
                tag_request(exc, c.index)
            raise
    return answered


def _keyed_rows(db: Database, keys: Sequence[str], caller: Connection | None) -> dict[str, Any]:
    """The stored tasks under some idempotency keys, by key (one query)."""
    with reading(db, caller) as conn:
        rows = conn.execute(
            sa.select(
                m.tasks.c.idempotency_key,
                m.tasks.c.task_id,
                m.tasks.c.request_digest,
                m.tasks.c.parent_step_id,
                m.named_tasks.c.version,
            )
            .join(m.named_tasks, m.tasks.c.named_task_id == m.named_tasks.c.named_task_id)
            .where(m.tasks.c.idempotency_key.in_(keys))
        ).all()
    return {r.idempotency_key: r for r in rows}


def keyed_task(
    db: Database,
    reg: RegisteredTask,
    req: TaskRequest,
    values: dict[str, Any],
    caller: Connection | None = None,
) -> tuple[int, int | None] | None:
    """The task stored under a checked request's idempotency key, as `enqueue` answers it.

    Args:
        values: the request's checked values (`check_request`), with a key.

    Returns:
        (task id, the step that spawned it or None), or None if no task has the key.

    Raises:
        IdempotencyConflictError: the key was used with a different request.
    """
    key = values["idempotency_key"]
    row = _keyed_rows(db, [key], caller).get(key)
    if row is None:
        return None
    accepted = _same_request(reg, req, values, row)
    parent = row.parent_step_id
    return accepted.task_id, None if parent is None else int(parent)


def _raise_duplicate(
    db: Database, todo: Sequence[_Checked], batch: bool, caller: Connection | None
) -> None:
    """The insert hit the one-live-task-per-subject index: raise for a request's holder.

    The idempotency keys are checked first: a concurrent request with the same key may
    have taken the subject, and answers as before (the caller tries again).

    Raises:
        DuplicateTaskError: a task that is not final holds a request's subject.
        IdempotencyConflictError: a key's task was made by a different request.
    """
    if _by_keys(db, todo, batch, caller):
        return
    for c in todo:
        duplicate = duplicate_of(db, c.values, caller)
        if duplicate is not None:
            if batch:
                tag_request(duplicate, c.index)
            raise duplicate


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


def _same_request(
    reg: RegisteredTask, req: TaskRequest, values: dict[str, Any], row: Any
) -> Accepted:
    """The task stored under the request's key (`row`), if the same request created it.

    The same request is the same as sent. A version named by one and left out (None:
    the newest) by the other is the same too when both mean the stored task's version:
    the first left it out and it resolved to the version the repeat names, or the first
    named the version that the repeat's None still resolves to.

    Raises:
        IdempotencyConflictError: the key was used with a different request.
    """
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
                "wait_for": tpl.wait_for,
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
