"""The state machine of tasks and steps, written down once.

Every status change the engine or a steering call makes is checked here and
recorded as a transition row (the audit trail).
"""

from __future__ import annotations

from enum import Enum

from tasker.errors import InvalidTransitionError


class Status(str, Enum):
    """Statuses shared by tasks and steps (`skipped` is for steps only, `paused` for tasks)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    ERROR = "error"
    CANCELLED = "cancelled"
    RESOLVED_MANUALLY = "resolved_manually"
    SKIPPED = "skipped"
    PAUSED = "paused"

    def __str__(self) -> str:
        return self.value


#: A step in one of these lets its dependents run.
SATISFIED = frozenset({Status.COMPLETE, Status.RESOLVED_MANUALLY, Status.SKIPPED})

#: A task in one of these is finished: no message for it does anything.
TASK_FINAL = frozenset({Status.COMPLETE, Status.CANCELLED, Status.RESOLVED_MANUALLY})

#: A task in one of these is live: the engine and the sweeper work on it.
TASK_LIVE = frozenset({Status.PENDING, Status.IN_PROGRESS})

#: A task in one of these has stopped and waits for a person (`paused` keeps its steps
#: as they are until `resume`, `retry`, `resolve_step` or `cancel`).
TASK_HALTED = frozenset({Status.ERROR, Status.PAUSED})

#: What an `in_progress` step may await once its handler returned (its `awaiting` column):
#: its spawned sub-tasks, or its `for_each` items. Such a step has no thread, and is not
#: "worker lost": it completes (or fails) when a finished child or item nudges its task.
#: A running handler's step has `awaiting` None.
AWAIT_CHILDREN = "children"
AWAIT_ITEMS = "items"
AWAITING = frozenset({AWAIT_CHILDREN, AWAIT_ITEMS})

# `None` is the state before the row exists.
STEP_TRANSITIONS: dict[Status | None, frozenset[Status]] = {
    None: frozenset({Status.PENDING, Status.SKIPPED}),
    # pending -> error: a step still waiting for its event when its `wait_timeout` passed
    # (pending -> skipped also: `on_failure="skip"`, or a branch not taken).
    Status.PENDING: frozenset(
        {
            Status.IN_PROGRESS,
            Status.CANCELLED,
            Status.RESOLVED_MANUALLY,
            Status.SKIPPED,
            Status.ERROR,
        }
    ),
    # in_progress -> error also covers "worker lost" and "timed out".
    # in_progress -> pending: the run asked for a reattempt, or paused the task.
    # in_progress -> skipped: `step.skip()`, `run_if` false, or `on_failure="skip"`.
    # in_progress -> in_progress: its handler returned and the step now awaits (AWAITING).
    Status.IN_PROGRESS: frozenset(
        {
            Status.COMPLETE,
            Status.ERROR,
            Status.CANCELLED,
            Status.PENDING,
            Status.SKIPPED,
            Status.IN_PROGRESS,
        }
    ),
    # error -> in_progress is a retry; error -> pending is `retry()` with a fresh budget.
    Status.ERROR: frozenset(
        {
            Status.IN_PROGRESS,
            Status.PENDING,
            Status.CANCELLED,
            Status.RESOLVED_MANUALLY,
            Status.SKIPPED,
        }
    ),
    Status.COMPLETE: frozenset(),
    Status.SKIPPED: frozenset(),
    Status.RESOLVED_MANUALLY: frozenset(),
    Status.CANCELLED: frozenset(),
}

TASK_TRANSITIONS: dict[Status | None, frozenset[Status]] = {
    None: frozenset({Status.PENDING}),
    # -> resolved_manually: `resolve_task`, by a person (never while the engine works on it).
    Status.PENDING: frozenset({Status.IN_PROGRESS, Status.CANCELLED, Status.RESOLVED_MANUALLY}),
    # -> paused: `task.pause()` or `on_failure="pause"`, once the pass's running steps ended.
    Status.IN_PROGRESS: frozenset({Status.COMPLETE, Status.ERROR, Status.CANCELLED, Status.PAUSED}),
    # error -> in_progress: resumed by resolve_step or retry.
    Status.ERROR: frozenset({Status.IN_PROGRESS, Status.CANCELLED, Status.RESOLVED_MANUALLY}),
    # paused -> in_progress: `resume`, `retry` or `resolve_step`; paused -> error: it
    # reached its `TaskHandler.timeout` deadline while paused.
    Status.PAUSED: frozenset(
        {Status.IN_PROGRESS, Status.CANCELLED, Status.RESOLVED_MANUALLY, Status.ERROR}
    ),
    Status.COMPLETE: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.RESOLVED_MANUALLY: frozenset(),
}


def is_note(from_status: Status | None, to_status: Status) -> bool:
    """Whether a task history row is a note, not a change: it keeps the status.

    Such a row records something that happened to a task without changing it, e.g. how
    its `on_finish` call went (`tasker.control.finishing`).
    """
    return from_status is not None and from_status is to_status


def can_step(from_status: Status | None, to_status: Status) -> bool:
    """Tell whether a step may move from `from_status` to `to_status`."""
    return to_status in STEP_TRANSITIONS.get(from_status, frozenset())


def can_task(from_status: Status | None, to_status: Status) -> bool:
    """Tell whether a task may move from `from_status` to `to_status`."""
    return to_status in TASK_TRANSITIONS.get(from_status, frozenset())


def check_step(name: str, from_status: Status | None, to_status: Status) -> None:
    """Check a step transition.

    Raises:
        InvalidTransitionError: the state machine does not allow it.
    """
    if not can_step(from_status, to_status):
        raise InvalidTransitionError(f"step {name!r} cannot go from {from_status} to {to_status}")


def check_task(task_id: int, from_status: Status | None, to_status: Status) -> None:
    """Check a task transition.

    Raises:
        InvalidTransitionError: the state machine does not allow it.
    """
    if not can_task(from_status, to_status):
        raise InvalidTransitionError(f"task {task_id} cannot go from {from_status} to {to_status}")
