"""The one error tree of tasker: everything it raises derives from `TaskerError`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class TaskerError(Exception):
    """Root of every error tasker raises."""


class ConfigurationError(TaskerError):
    """A task handler, step template or setting is invalid (raised at registration or start)."""


class DagCycleError(ConfigurationError):
    """The steps of a task handler depend on each other in a cycle.

    Attributes:
        cycle: the steps on the cycle as a closed path in dependency order: each
            depends on the one before it and the last is the first again
            (`["a", "b", "a"]`; a step that depends on itself: `["a", "a"]`).
    """

    def __init__(self, task_name: str, cycle: Sequence[str]) -> None:
        self.cycle = list(cycle)
        path = " -> ".join(self.cycle) if self.cycle else "?"
        super().__init__(f"task {task_name!r}: steps depend on each other in a cycle: {path}")


class InvalidRequestError(TaskerError):
    """A request (enqueue, steering call) is invalid; nothing was stored and nothing was sent.

    Attributes:
        request_index: for `Tasker.enqueue_many`, the position of the request at fault
            (None otherwise).
    """

    request_index: int | None = None


class ContextValidationError(InvalidRequestError):
    """The task context does not match the handler's `context_schema`.

    Attributes:
        errors: one readable message per violation, each naming the JSON path.
    """

    def __init__(self, task_name: str, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        joined = "; ".join(self.errors)
        super().__init__(f"invalid context for task {task_name!r} ({len(self.errors)}): {joined}")


class UnknownTaskError(InvalidRequestError):
    """No task handler is registered under the requested name (and version)."""


class IdempotencyConflictError(InvalidRequestError):
    """An idempotency key was reused with a different request."""


class NotFoundError(InvalidRequestError):
    """A request names something that does not exist (an HTTP layer answers 404)."""


class TaskNotFoundError(NotFoundError):
    """No task has the given id."""


class StepNotFoundError(NotFoundError):
    """The task has no step of the given name."""


class InvalidTransitionError(InvalidRequestError):
    """A steering call asked for a status change the state machine does not allow."""


class InvalidStateError(InvalidRequestError):
    """The task's or step's state does not allow the request (an HTTP layer answers 409).

    For example: changing a step that has already completed, or resuming a task
    that is not paused. Nothing was changed.
    """


class LeaseLostError(TaskerError):
    """This worker no longer holds the task's lease; its writes were refused (fencing)."""


class StaleRevisionError(TaskerError):
    """The lease is ours but a steering call changed the task: re-read it, plan again.

    Raised by a store's fenced write and handled by the engine pass; it never reaches
    a caller of the public API.
    """


class StepError(TaskerError):
    """Base for errors a step handler raises on purpose to steer its retries."""


class RetryableError(StepError):
    """The attempt failed but may be retried.

    Args:
        message: what went wrong.
        retry_after: if given, the next attempt is due exactly this many seconds later
            (instead of the exponential backoff).
    """

    def __init__(self, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        if retry_after is not None and retry_after < 0:
            raise ValueError(f"retry_after must be >= 0, got {retry_after!r}")
        self.retry_after = retry_after


class PermanentError(StepError):
    """The attempt failed and no further attempt may be made."""


class StepTimeoutError(StepError):
    """The step handler ran past its time limit (recorded as the attempt's error)."""


class InvalidResultError(StepError):
    """The step handler returned something that cannot be stored as a JSON object."""


class NativeHandlerError(StepError):
    """A native (Rust) step handler reported an error or panicked.

    Attributes:
        details: the error object the native side returned, if any.
    """

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class NativeLibraryNotFoundError(ConfigurationError):
    """The native handler library is not built or cannot be loaded."""


class DuplicateTaskError(InvalidRequestError):
    """A `one_per_subject` task of that name already holds the subject and is not final.

    Attributes:
        existing_task_id: the task that holds the subject.
    """

    def __init__(self, message: str, existing_task_id: int) -> None:
        super().__init__(message)
        self.existing_task_id = existing_task_id


class ReattemptLimitError(StepError):
    """A step asked to be reattempted more than its `max_reattempts` allow."""


class WaitTimeoutError(StepError):
    """A polling step still asked to be reattempted past its `wait_timeout`."""


class NoDecisionError(StepError):
    """A decision step returned no `Decision`."""


class SpeedrunError(TaskerError):
    """`tasker.testing.speedrun` ran more steps than its `max_steps` allow."""


class SubTaskError(StepError):
    """A sub-task the step waited for (`step.spawn(wait=True)`) ended in error or cancelled.

    The step fails for good; its error message names the sub-task's id.
    """


class ItemError(StepError):
    """A `for_each` step failed: an item has no attempt left, or the item list is invalid."""
