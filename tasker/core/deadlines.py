"""Task timeouts, decided once: when a task's deadline has passed, and what it records.

A task of a handler with `TaskHandler.timeout` stores `deadline_at = created_at +
timeout`. At that moment it ends in `error` wherever it is (running, sleeping or paused):
no step starts any more, an outcome that comes later is refused, and `TaskView.error`
says it timed out. A `retry` or `resolve_step` of a timed-out task lets it go on with a
new deadline as far away as the first one was (`extended`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
