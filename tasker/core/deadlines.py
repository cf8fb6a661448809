"""Task timeouts, decided once: when a task's deadline has passed, and what it records.

A task of a handler with `TaskHandler.timeout` stores `deadline_at = created_at +
timeout`. At that moment it ends in `error` wherever it is (running, sleeping or paused):
no step starts any more, an outcome that comes later is refused, and `TaskView.error`
says it timed out. A `retry` or `resolve_step` of a timed-out task lets it go on with a
new deadline as far away as the first one was (`extended`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from tasker.core.states import Status
from tasker.core.views import StepView
from tasker.store.audit import StepChange
from tasker.store.lease import Finish

#: The error class named in a timed-out task's `error` (and its running steps').
TIMEOUT_CLASS = "tasker.errors.TaskTimeoutError"


def timed_out(deadline: datetime | None, now: datetime) -> bool:
    """Whether a task with this deadline must end now (None: it has no timeout)."""
    return deadline is not None and now >= deadline


def sooner(at: datetime | None, deadline: datetime | None) -> datetime | None:
    """The earlier of a wake-up time and the deadline (either may be None)."""
    if at is None:
        return deadline
    if deadline is None:
        return at
    return min(at, deadline)


def timeout_error(created_at: datetime, deadline: datetime) -> dict[str, Any]:
    """The `error` of a task that reached its deadline."""
    seconds = (deadline - created_at).total_seconds()
    return {
        "message": f"task timed out: not finished {seconds:g} s after it was created "
        f"(deadline {deadline.isoformat()})",
        "error_class": TIMEOUT_CLASS,
        "deadline": deadline.isoformat(),
    }


def step_timeout_error(deadline: datetime) -> dict[str, Any]:
    """The `error` of a step that was running when its task timed out."""
    return {
        "message": f"task timed out at {deadline.isoformat()} while this step ran; "
        "its outcome is not recorded",
        "error_class": TIMEOUT_CLASS,
        "backtrace": "",
    }


def is_timeout(error: Any) -> bool:
    """Whether a task's stored `error` is a timeout's."""
    return isinstance(error, dict) and error.get("error_class") == TIMEOUT_CLASS


def extended(created_at: datetime, deadline: datetime, now: datetime) -> datetime:
    """The deadline of a timed-out task that a person lets go on: a full timeout from now."""
    return now + (deadline - created_at)


def time_out(
    views: Mapping[str, StepView], created: datetime, deadline: datetime
) -> tuple[dict[str, StepView], list[StepChange], Finish]:
    """The write of a task that reached its deadline: it ends in `error`, nothing runs.

    A running step's attempt ends in `error` (its outcome, when it comes, is refused);
    a failed step loses its next attempt; pending steps stay as they are.

    Returns:
        The steps it changes, their transitions, and the task's ending.
    """
    steps: dict[str, StepView] = {}
    changes: list[StepChange] = []
    for name, v in views.items():
        if v.status == Status.IN_PROGRESS.value:
            steps[name] = replace(
                v,
                status=Status.ERROR.value,
                error=step_timeout_error(deadline),
                next_attempt_at=None,
            )
            changes.append(
                StepChange(
                    v.workflow_step_id,
                    name,
                    Status.IN_PROGRESS,
                    Status.ERROR,
                    v.attempts,
                    "task timed out",
                )
            )
        elif v.status == Status.ERROR.value and v.next_attempt_at is not None:
            steps[name] = replace(v, next_attempt_at=None)
    error = timeout_error(created, deadline)
    return steps, changes, Finish(Status.ERROR, None, error["message"], error)
