"""A step of a task handler's DAG: `StepTemplate`, and the forms a step handler may take."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa

from tasker.core.duration import to_seconds
from tasker.errors import ConfigurationError

if TYPE_CHECKING:
    from tasker.engine.runtime import HandlerStep, HandlerTask, StepSequence

#: What the engine calls for a step: `fn(task, sequence, step)`.
HandleFn = Callable[["HandlerTask", "StepSequence", "HandlerStep"], Any]


class StepHandler:
    """Base class for step handlers: override `handle`.

    A new instance is made for every attempt, so instance state never leaks
    between attempts or tasks.
    """

    def handle(self, task: HandlerTask, sequence: StepSequence, step: HandlerStep) -> Any:
        """Do the step's work.

        Args:
            task: the task (`task.context`, `task.task_id`, `task.annotate(...)`).
            sequence: every step of the task (`sequence.step(name).results`).
            step: this step (`step.inputs`; assign `step.results` or return a dict).

        Returns:
            A JSON-serialisable dict that becomes `step.results`, or None to keep
            whatever was assigned to `step.results`.

        Raises:
            RetryableError: to ask for another attempt (optionally after `retry_after`).
            PermanentError: to fail the step with no further attempt.
        """
        raise NotImplementedError(f"{type(self).__name__}.handle is not implemented")


def resolve_handler(step_name: str, handler: object) -> HandleFn:
    """Turn any accepted handler form into one callable.

    Accepted: a class with a `handle` method (instantiated per attempt, without
    arguments), an object with a `handle` method, or a function
    `fn(task, sequence, step)`.

    Raises:
        ConfigurationError: the handler is none of those.
    """
    if isinstance(handler, type):
        if not callable(getattr(handler, "handle", None)):
            raise ConfigurationError(
                f"step {step_name!r}: handler class {handler.__name__} has no handle()"
            )
        try:
            inspect.signature(handler).bind()
        except TypeError as exc:
            raise ConfigurationError(
                f"step {step_name!r}: handler class {handler.__name__} must be constructible "
                f"without arguments ({exc}); pass an instance instead"
            ) from exc
        except ValueError:  # builtins without a signature: trust them
            pass
        cls = handler

        def per_attempt(task: HandlerTask, sequence: StepSequence, step: HandlerStep) -> Any:
            return cls().handle(task, sequence, step)

        return per_attempt
    bound = getattr(handler, "handle", None)
    if callable(bound):
        return cast("HandleFn", bound)
    if callable(handler):
        return cast("HandleFn", handler)
    raise ConfigurationError(
        f"step {step_name!r}: handler {handler!r} is not a StepHandler, an object with "
        "handle(task, sequence, step), or a function"
    )


#: What a step with no attempt left may do (`StepTemplate.on_failure`).
ON_FAILURE = ("error", "pause", "skip", "cancel")


def _seconds(where: str, name: str, value: object) -> float | None:
    """A wait given as seconds or a timedelta, in seconds (None stays None).

    Raises:
        ConfigurationError: it is not a duration, or it is negative.
    """
    if value is None:
        return None
    try:
        seconds = to_seconds(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: {name} must be seconds or a timedelta ({exc})") from exc
    if seconds < 0:
        raise ConfigurationError(f"{where}: {name} must not be negative, got {value!r}")
    return seconds


def database_url(where: str, database: object) -> sa.URL:
    """The URL of a step's `database=` (a URL string, a `sqlalchemy.URL` or an `Engine`).

    Raises:
        ConfigurationError: it is none of those, or the URL cannot be parsed.
    """
    if isinstance(database, sa.Engine):
        return database.url
    if isinstance(database, sa.URL):
        return database
    if isinstance(database, str):
        try:
            return sa.engine.make_url(database)
        except Exception as exc:
            raise ConfigurationError(
                f"{where}: cannot parse database= {database!r}: {exc}"
            ) from exc
    raise ConfigurationError(
        f"{where}: database= takes a URL or a SQLAlchemy Engine, got {type(database).__name__}"
    )


@dataclass(frozen=True)
class StepTemplate:
    """One step of a task handler's DAG.

    Attributes:
        name: unique within the task handler.
        handler: a `StepHandler` subclass, an object or class with `handle(task, sequence,
            step)`, or a plain function with that signature.
        depends_on: names of the steps that must be complete (or resolved, or skipped)
            before this one runs.
        dependent_system: the system this step talks to (reporting).
        description: free text.
        retryable: False means exactly one attempt.
        retry_limit: the maximum number of attempts in total (at least 1).
        skippable: whether `TaskRequest.bypass_steps` may name this step.
        timeout: seconds one attempt may run before it is recorded as failed
            (None: the app's `step_timeout`).
        wait: do not start before this long (seconds or a timedelta) has passed since
            the last dependency was satisfied (for a step with none: since the task was
            created).
        after: do not start before the task's `created_at` plus this (the later of
            `wait` and `after` wins).
        run_if: `fn(task, sequence) -> bool`, called when the step is about to start;
            False skips it (its dependents go on); an exception fails the attempt.
        max_reattempts: at most this many `step.reattempt()` requests; the one after
            fails the step for good with `ReattemptLimitError` (None: no bound).
        on_failure: what a step with no attempt left does: "error" (the task ends in
            error once nothing else can progress), "pause" (the task pauses), "skip"
            (the step becomes skipped, its error kept) or "cancel" (the task is cancelled).
        wait_timeout: how long after its dependencies were satisfied the step may still
            wait for its event (`wait_for`) or ask to be reattempted; past it the step
            fails for good with `WaitTimeoutError` (and `on_failure` applies).
        branches: makes this a decision step: label -> the steps of that branch, each
            depending directly on this step (checked at registration). Its handler
            returns `tasker.Decision(*labels, results=None)`; the branches not chosen
            are skipped. A decision step that spawns sub-tasks it waits for keeps its
            decision until they are done, and the branches not chosen are skipped when
            it completes. A `for_each` step cannot be a decision step (its handler runs
            once per item: there is no one decision to take).
        wait_for: the name of the event (`app.signal`) this step waits for once its
            dependencies are satisfied; its handler sees the payload as `step.event`.
            Such a step may have no handler: a dict payload becomes its results, any
            other value `{"payload": value}`.
        for_each: makes this a collection step: `fn(task, sequence) -> list` of JSON
            values, evaluated once when the step first starts and stored; the handler
            runs once per item (`step.item`, `step.item_index`), each item with its own
            attempts and backoff under this step's retry rules and `timeout`; the
            step's results are `{"items": [each item's results, in order]}`. Its
            handler cannot `step.spawn` (the item's attempt fails with
            `InvalidStateError`).
        concurrency: at most this many items of a `for_each` step run at once (default:
            the app's `max_concurrent_steps`).
        transactional: the handler gets `step.connection`, a SQLAlchemy `Connection` in
            the transaction that records the step's outcome (fenced by the lease): its
            writes commit if and only if the step is recorded `complete`. On SQLite the
            transaction holds the database's single write lock while the handler runs:
            keep such steps short (other writers wait behind it).
        database: for a transactional step, the database its writes are meant for (a URL
            or a SQLAlchemy `Engine`); registering it on an app whose database is another
            one raises `ConfigurationError` (default None: tasker's, unchecked).

    `wait`, `after` and `wait_timeout` are stored in seconds (floats).

    Raises:
        ConfigurationError: a field is invalid (raised on construction).
    """

    name: str
    handler: object = None
    depends_on: Sequence[str] = ()
    dependent_system: str = "default"
    description: str = ""
    retryable: bool = True
    retry_limit: int = 3
    skippable: bool = False
    timeout: float | None = None
    wait: float | timedelta | None = None
    after: float | timedelta | None = None
    run_if: Callable[..., Any] | None = None
    max_reattempts: int | None = None
    on_failure: str = "error"
    wait_timeout: float | timedelta | None = None
    branches: Mapping[str, Sequence[str]] | None = None
    wait_for: str | None = None
    for_each: Callable[..., Any] | None = None
    concurrency: int | None = None
    transactional: bool = False
    database: object = None
    _fn: HandleFn = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigurationError(f"step name must be a non-empty string, got {self.name!r}")
        where = f"step {self.name!r}"
        if isinstance(self.depends_on, str) or not all(isinstance(d, str) for d in self.depends_on):
            raise ConfigurationError(f"{where}: depends_on must be a list of step names")
        object.__setattr__(self, "depends_on", tuple(self.depends_on))
        if len(set(self.depends_on)) != len(self.depends_on):
            raise ConfigurationError(
                f"{where}: depends_on names a step twice: {list(self.depends_on)}"
            )
        if not isinstance(self.dependent_system, str) or not self.dependent_system:
            raise ConfigurationError(f"{where}: dependent_system must be a non-empty string")
        if not isinstance(self.retryable, bool) or not isinstance(self.skippable, bool):
            raise ConfigurationError(f"{where}: retryable and skippable must be booleans")
        if isinstance(self.retry_limit, bool) or not isinstance(self.retry_limit, int):
            raise ConfigurationError(
                f"{where}: retry_limit must be an integer, got {self.retry_limit!r}"
            )
        if self.retry_limit < 1:
            raise ConfigurationError(
                f"{where}: retry_limit must be at least 1, got {self.retry_limit}"
            )
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, (int, float))
            or not math.isfinite(self.timeout)
            or self.timeout <= 0
        ):
            raise ConfigurationError(f"{where}: timeout must be a positive number of seconds")
        for name in ("wait", "after", "wait_timeout"):
            object.__setattr__(self, name, _seconds(where, name, getattr(self, name)))
        if self.run_if is not None and not callable(self.run_if):
            raise ConfigurationError(
                f"{where}: run_if must be a callable run_if(task, sequence) -> bool, "
                f"got {self.run_if!r}"
            )
        if self.max_reattempts is not None and (
            isinstance(self.max_reattempts, bool)
            or not isinstance(self.max_reattempts, int)
            or self.max_reattempts < 0
        ):
            raise ConfigurationError(
                f"{where}: max_reattempts must be an integer of at least 0 or None, "
                f"got {self.max_reattempts!r}"
            )
        if self.on_failure not in ON_FAILURE:
            raise ConfigurationError(
                f"{where}: on_failure must be one of {list(ON_FAILURE)}, got {self.on_failure!r}"
            )
        if not isinstance(self.transactional, bool):
            raise ConfigurationError(f"{where}: transactional must be a boolean")
        if self.transactional and self.for_each is not None:
            raise ConfigurationError(
                f"{where}: a for_each step cannot be transactional (its items run apart)"
            )
        if self.database is not None:
            if not self.transactional:
                raise ConfigurationError(
                    f"{where}: database= is for a transactional step (transactional=True)"
                )
            database_url(where, self.database)
        object.__setattr__(self, "branches", _branches(where, self.branches))
        _check_for_each(where, self.for_each, self.concurrency)
        if self.branches is not None and self.for_each is not None:
            raise ConfigurationError(
                f"{where}: branches= and for_each= cannot be combined: a for_each step's "
                "handler runs once per item, so it cannot return the one Decision that "
                "branches= needs (decide in a step that depends on it)"
            )
        if self.wait_for is not None and (
            not isinstance(self.wait_for, str) or not self.wait_for.strip()
        ):
            raise ConfigurationError(
                f"{where}: wait_for must be a non-empty event name, got {self.wait_for!r}"
            )
        if self.handler is None:
            if self.wait_for is None:
                raise ConfigurationError(
                    f"{where}: a handler is required (only a wait_for step may have none)"
                )
            object.__setattr__(self, "_fn", _event_results)
        else:
            object.__setattr__(self, "_fn", resolve_handler(self.name, self.handler))

    def timing(self) -> tuple[float | None, float | None, float | None]:
        """`wait`, `after` and `wait_timeout`, in seconds (as stored on construction)."""
        return cast("tuple[float | None, float | None, float | None]", (
            self.wait, self.after, self.wait_timeout,
        ))  # fmt: skip

    def call(self, task: HandlerTask, sequence: StepSequence, step: HandlerStep) -> Any:
        """Run the step's handler once."""
        return self._fn(task, sequence, step)


def _check_for_each(where: str, for_each: object, concurrency: object) -> None:
    """Check `for_each` and `concurrency`.

    Raises:
        ConfigurationError: `for_each` is not callable, or `concurrency` is not an integer
            of at least 1, or is given without `for_each`.
    """
    if for_each is not None and not callable(for_each):
        raise ConfigurationError(
            f"{where}: for_each must be a callable for_each(task, sequence) -> list, "
            f"got {for_each!r}"
        )
    if concurrency is None:
        return
    if for_each is None:
        raise ConfigurationError(f"{where}: concurrency is for a for_each step only")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(
            f"{where}: concurrency must be an integer of at least 1, got {concurrency!r}"
        )


def _branches(where: str, value: object) -> dict[str, tuple[str, ...]] | None:
    """`branches` as label -> step names (None stays None).

    Raises:
        ConfigurationError: not a non-empty mapping of labels to lists of step names.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        raise ConfigurationError(
            f"{where}: branches must map each label to a list of step names, got {value!r}"
        )
    out: dict[str, tuple[str, ...]] = {}
    for label, names in value.items():
        if not isinstance(label, str) or not label:
            raise ConfigurationError(f"{where}: a branch label must be a non-empty string")
        if (
            isinstance(names, str)
            or not isinstance(names, Sequence)
            or not all(isinstance(n, str) for n in names)
        ):
            raise ConfigurationError(
                f"{where}: branch {label!r} must be a list of step names, got {names!r}"
            )
        out[label] = tuple(names)
    return out


def _event_results(task: HandlerTask, sequence: StepSequence, step: HandlerStep) -> Any:
    """The handler of a `wait_for` step without one: the event's payload as results."""
    payload = step.event
    return payload if isinstance(payload, dict) else {"payload": payload}
