"""The objects a step handler and `update_annotations` receive."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Generic, NoReturn, Protocol, TypeVar, overload

from sqlalchemy.engine import Connection

from tasker.core import flow
from tasker.core.clock import as_utc
from tasker.core.duration import to_seconds
from tasker.core.jsonvalue import json_problem
from tasker.core.spawns import Spawn
from tasker.core.views import StepView
from tasker.definition.request import TaskRequest
from tasker.errors import InvalidRequestError, InvalidStateError, StepNotFoundError

_V = TypeVar("_V")


class SpawnerLike(Protocol):
    """What `HandlerStep.spawn` needs (`tasker.engine.spawning.Spawner`)."""

    def existing(self, step_id: int) -> dict[str, int]:
        """The children the step spawned before, by key."""

    def spawn(
        self,
        parent_task_id: int,
        step_id: int,
        request: TaskRequest,
        key: str,
        wait: bool,
        before: dict[str, int],
        conn: Connection | None = None,
        earlier: Sequence[Spawn] = (),
    ) -> Spawn:
        """One child of the step (`HandlerStep.spawn` has checked the request's type)."""


_SCALARS = (str, int, float, bool, type(None))


def json_copy(value: _V) -> _V:
    """A copy of a JSON value that shares nothing mutable with it (cheaper than deepcopy)."""
    kind = type(value)
    if kind is dict:
        return {k: json_copy(v) for k, v in value.items()}  # type: ignore[attr-defined, return-value]
    if kind is list:
        return [json_copy(v) for v in value]  # type: ignore[attr-defined, return-value]
    if kind in _SCALARS:
        return value
    return copy.deepcopy(value)


class _CopyOnRead(Generic[_V]):
    """An attribute holding a shared value, copied on first read (or replaced by a write).

    Each handler gets a value it may mutate without changing what another step sees,
    and a handler that never reads it costs nothing.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._name, self._shared = name, f"_shared_{name}"

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> _CopyOnRead[_V]: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> _V: ...
    def __get__(self, obj: object | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        values = obj.__dict__
        try:
            return values[self._name]
        except KeyError:
            mine = values[self._name] = json_copy(values[self._shared])
            return mine

    def __set__(self, obj: object, value: _V) -> None:
        obj.__dict__[self._name] = value


def _share(obj: object, name: str, value: Any) -> None:
    """Give `obj`'s copy-on-read attribute `name` the shared value `value`."""
    obj.__dict__[f"_shared_{name}"] = value


class HandlerTask(flow.FlowControl):
    """The task as a handler sees it.

    Attributes:
        task_id, name, version, context, tags, initiator, source_system, reason,
        requested_at: the task's request, as stored (`requested_at` aware UTC).
            `context` is this handler's own copy: mutating it changes nothing another
            step sees.
    """

    context: _CopyOnRead[dict[str, Any]] = _CopyOnRead()

    def __init__(self, row: Mapping[str, Any]) -> None:
        self.task_id: int = row["task_id"]
        self.name: str = row["name"]
        self.version: str = row["version"]
        _share(self, "context", row["context"])
        self.tags: list[str] = list(row["tags"])
        self.initiator: str = row["initiator"]
        self.source_system: str = row["source_system"]
        self.reason: str = row["reason"]
        self.requested_at: datetime = as_utc(row["requested_at"])
        self.pending_annotations: list[tuple[str, dict[str, Any]]] = []

    def annotate(self, annotation_type: str, annotation: dict[str, Any]) -> None:
        """Attach an annotation; it is stored with the outcome of this round of steps.

        Raises:
            InvalidRequestError: the type is empty or the annotation is not a JSON object.
        """
        if not isinstance(annotation_type, str) or not annotation_type:
            raise InvalidRequestError("annotation_type must be a non-empty string")
        if not isinstance(annotation, dict):
            raise InvalidRequestError(
                f"an annotation must be a dict, got {type(annotation).__name__}"
            )
        problem = json_problem(annotation)
        if problem:
            raise InvalidRequestError(f"annotation {annotation_type!r} cannot be stored: {problem}")
        self.pending_annotations.append((annotation_type, annotation))

    def pause(self, reason: str = "") -> NoReturn:
        """End this run and pause the task once its running steps are recorded.

        This step goes back to `pending` and runs again on `app.resume`. Not a failed
        attempt. Raises a control exception that `except Exception:` does not catch.
        Like every flow request it takes effect when this run's outcome is recorded: a
        worker lost before that pauses nothing (the run is a failed attempt, "worker
        lost", and the step runs again).

        Raises:
            InvalidStateError: called outside a running handler.
        """
        raise self._request(flow.PAUSE, reason=reason)

    def cancel(self, reason: str = "") -> NoReturn:
        """End this run and cancel the task and its unfinished steps.

        Raises:
            InvalidStateError: called outside a running handler.
        """
        raise self._request(flow.CANCEL, reason=reason)

    def take_annotations(self) -> list[tuple[str, dict[str, Any]]]:
        """Hand over the annotations collected so far (engine use)."""
        taken, self.pending_annotations = self.pending_annotations, []
        return taken


class HandlerStep(flow.FlowControl):
    """The step being run: read `inputs`, set `results` (or return them).

    Attributes:
        name, workflow_step_id, depends_on, dependent_system, retry_limit, retryable:
            the step's definition.
        attempts: the number of this attempt (1 for the first).
        reattempts: how many runs of this step asked to run again later.
        idempotency_key: the same for every attempt of this step of this task, and
            different for every other step: pass it to external APIs.
        inputs: the step's inputs (the task context unless set otherwise).
        results: what the step produced; assign it, or return a dict from `handle`.
        status: the step's status (in `update_annotations`: the outcome).
        error: the previous attempt's error (None on the first attempt).
        event: the payload of the event a `wait_for` step consumed (None otherwise).
        `inputs` (the view's, unless given), `results` and `error` are this handler's
        own copies: mutating them
        changes nothing another step sees, nor what is stored.
    """

    inputs: _CopyOnRead[Any] = _CopyOnRead()
    results: _CopyOnRead[Any] = _CopyOnRead()
    error: _CopyOnRead[dict[str, Any] | None] = _CopyOnRead()

    def __init__(self, view: StepView, inputs: Any = None) -> None:
        self.name = view.name
        self.workflow_step_id = view.workflow_step_id
        self.depends_on = view.depends_on
        self.dependent_system = view.dependent_system
        self.retry_limit = view.retry_limit
        self.retryable = view.retryable
        self.attempts = view.attempts
        self.reattempts = view.reattempts
        self.idempotency_key = view.idempotency_key
        _share(self, "inputs", view.inputs if inputs is None else inputs)
        _share(self, "results", view.results)
        self.status = view.status
        _share(self, "error", view.error)
        # Sub-tasks: set by the engine (or `tasker.testing.run_step`) for a run.
        self._spawner: SpawnerLike | None = None
        self._task_id = 0
        self._spawns: list[Spawn] = []
        self._spawned_before: dict[str, int] | None = None
        self.event: Any = None
        # A `for_each` step's item and its index in the list (None for any other step).
        self.item: Any = None
        self.item_index: int | None = None
        #: The transaction of a transactional step while its handler runs (the engine's).
        self._connection: Connection | None = None
        self._transactional = False

    def spawn(self, request: Any, key: str | int | None = None, wait: bool = True) -> int:
        """Spawn a sub-task; returns its task id at once.

        The child is created in the same transaction that records this attempt's
        outcome: a failed attempt spawns nothing, and a retried attempt spawning the same
        `key` (default: the spawn's position in the run) gets the same child. With
        `wait=True` the step completes only once every awaited child is done; one that
        ends in error or is cancelled fails the step for good.

        The request's `idempotency_key` and `subject` work as in `enqueue`: a key that
        names a task made by the same request returns that task (spawned by this step,
        or, with `wait=False`, by anyone), and a `one_per_subject` task's subject held by
        a task that is not final raises `DuplicateTaskError`.

        Not available in a `for_each` item's handler: an item's outcome is recorded
        with its batch, not with the step's, so it cannot create sub-tasks (spawn them
        from a step before or after the `for_each` step).

        Raises:
            InvalidStateError: called outside a running handler, or in a `for_each`
                item's handler (the item's attempt fails with it).
            InvalidRequestError: a bad request, key or `wait` (see `enqueue`), a key
                spawned twice in one run, or `wait=True` with an idempotency key naming
                a task this step did not spawn.
            IdempotencyConflictError: the idempotency key was used with another request.
            DuplicateTaskError: the subject is held (`.existing_task_id`).
            UnknownTaskError: no task of the request's name is registered.
        """
        if self.item_index is not None:
            raise InvalidStateError(
                f"spawn() is not available in a for_each item's handler (step {self.name!r}, "
                f"item {self.item_index}): an item cannot create sub-tasks; spawn them from "
                "a step before or after the for_each step"
            )
        if not self._in_run or self._spawner is None:
            raise InvalidStateError(
                "spawn() creates a sub-task with the step's outcome: call it from inside "
                "the step's handler while it runs"
            )
        if not isinstance(wait, bool):
            raise InvalidRequestError(f"spawn(): wait must be True or False, got {wait!r}")
        if key is None:
            key = len(self._spawns)
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise InvalidRequestError(f"spawn(): key must be a string or an integer, got {key!r}")
        name = str(key)
        if not name or len(name) > 255:
            raise InvalidRequestError(f"spawn(): key must be 1 to 255 characters, got {key!r}")
        if any(s.key == name for s in self._spawns):
            raise InvalidRequestError(f"spawn(): key {name!r} was spawned already in this run")
        if not isinstance(request, TaskRequest):
            raise InvalidRequestError(f"spawn() takes a TaskRequest, got {type(request).__name__}")
        if self._spawned_before is None:
            self._spawned_before = self._spawner.existing(self.workflow_step_id)
        spawned = self._spawner.spawn(
            self._task_id,
            self.workflow_step_id,
            request,
            name,
            wait,
            self._spawned_before,
            self._connection,  # a transactional step's: SQLite's lock is its own
            self._spawns,
        )
        self._spawns.append(spawned)
        return spawned.task_id

    def take_spawns(self) -> list[Spawn]:
        """Hand over the sub-tasks spawned in this run (engine use)."""
        taken, self._spawns = self._spawns, []
        return taken

    @property
    def connection(self) -> Connection:
        """The SQLAlchemy `Connection` of a transactional step, in its open transaction.

        What the handler writes through it commits with the step's outcome if and only if
        the step is recorded `complete` (see `StepTemplate(transactional=True)`). Do not
        commit or roll it back yourself.

        Raises:
            InvalidStateError: the step is not transactional, or its handler is not running.
        """
        if not self._transactional:
            raise InvalidStateError(
                f"step {self.name!r} has no step.connection: it is not transactional "
                "(declare StepTemplate(..., transactional=True) to run its handler in the "
                "transaction that records its outcome)"
            )
        if self._connection is None or not self._in_run:
            raise InvalidStateError(
                f"step {self.name!r}: step.connection is only open while its handler runs"
                " (tasker.testing.run_step gives it the connection= you pass)"
            )
        return self._connection

    def reattempt(self, wait: float | timedelta) -> NoReturn:
        """End this run; run the step again after `wait` (seconds or a timedelta).

        Not a failed attempt: `attempts` stays as it was, `reattempts` counts it.

        Raises:
            InvalidStateError: called outside a running handler, or `wait` is not a
                duration of at least 0.
        """
        try:
            seconds = to_seconds(wait)
        except (TypeError, ValueError) as exc:
            raise InvalidStateError(
                f"reattempt(): wait must be seconds or a timedelta ({exc})"
            ) from exc
        if seconds < 0:
            raise InvalidStateError(f"reattempt(): wait must not be negative, got {wait!r}")
        raise self._request(flow.REATTEMPT, wait=seconds)

    def skip(self, reason: str = "") -> NoReturn:
        """End this run; the step becomes `skipped` (its dependents go on).

        Raises:
            InvalidStateError: called outside a running handler.
        """
        raise self._request(flow.SKIP, reason=reason)


class StepSequence:
    """Every step of the task, for a handler to read others' results."""

    def __init__(self, lookup: Callable[[str], StepView | None], names: tuple[str, ...]) -> None:
        self._lookup = lookup
        self._names = names

    def step(self, name: str) -> StepView:
        """The view of step `name`, with its own copies of `inputs`, `results` and `error`.

        Raises:
            StepNotFoundError: the task has no such step.
        """
        view = self._lookup(name)
        if view is None:
            raise StepNotFoundError(f"this task has no step {name!r} (steps: {list(self._names)})")
        return replace(
            view,
            inputs=json_copy(view.inputs),
            results=json_copy(view.results),
            error=json_copy(view.error),
        )

    def __getitem__(self, name: str) -> StepView:
        return self.step(name)

    def __iter__(self) -> Iterator[StepView]:
        return (self.step(n) for n in self._names)

    def __len__(self) -> int:
        return len(self._names)

    @property
    def names(self) -> tuple[str, ...]:
        """Step names in topological order."""
        return self._names
