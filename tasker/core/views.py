"""Read-only views returned by the public API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class StepView:
    """One step of a task, as stored.

    `reattempts` counts the runs that asked to run again later (`step.reattempt`); they
    are not `attempts`. `waiting_for` says why a live step is not running now (None,
    "dependencies", "time" (see `next_attempt_at`), "event:<name>", "children", "items",
    "limit" or "paused"; always None once the task ended, in `error` too;
    `tasker.core.waits`). `wait_for` is the event it waits for (`StepTemplate.wait_for`).
    `idempotency_key` is the same for every attempt of the step and differs between
    steps and tasks. `awaiting` is what an `in_progress` step whose handler returned
    waits for ("children", "items"; `tasker.core.states.AWAITING`), else None; `items`
    counts a `for_each` step's items (`total`, `complete`, `error`, `pending`), else None.

    `depends_on` are the steps it waits for, from the task's stored edges (the DAG it
    was created with). `inputs` are what its handler sees as `step.inputs`: the step's
    own stored inputs, else the task's context. `results` is None for a step that has
    not run or was skipped. Each field named like a `tasker_workflow_steps` column is
    read from that column (`tasker.store.steps`).
    """

    workflow_step_id: int
    name: str
    status: str
    attempts: int
    retry_limit: int
    retryable: bool
    skippable: bool
    depends_on: tuple[str, ...]
    dependent_system: str
    inputs: Any
    results: Any
    error: dict[str, Any] | None
    last_attempted_at: datetime | None
    next_attempt_at: datetime | None
    processed_at: datetime | None = None
    reattempts: int = 0
    awaiting: str | None = None
    wait_for: str | None = None
    waiting_for: str | None = None
    items: dict[str, int] | None = None
    idempotency_key: str = field(init=False, default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "idempotency_key", step_idempotency_key(self.workflow_step_id))


def step_idempotency_key(workflow_step_id: int) -> str:
    """The key of every attempt of one step of one task (for external APIs)."""
    return f"tasker-step-{workflow_step_id}"


@dataclass(frozen=True)
class AnnotationView:
    """One annotation of a task."""

    task_id: int
    annotation_type: str
    annotation: Any
    created_at: datetime


@dataclass(frozen=True)
class TransitionView:
    """One status change in a task's audit trail (`step` is None for the task itself)."""

    step: str | None
    from_status: str | None
    to_status: str
    reason: str
    attempt: int | None
    created_at: datetime


@dataclass(frozen=True)
class TaskView:
    """A task with its steps (in topological order) and annotations.

    `bypass_steps` are the steps its request asked to skip (sorted), created `skipped`.
    `subject` is what the task is about (`TaskRequest.subject`, or None); `created_at`
    is when it was stored. `parent_task_id` is the task whose step spawned this one
    (None if no step did), and `children` the ids of the tasks its steps spawned, in
    spawn order. `error` is None, or why the task itself ended in `error`
    (`{"message", ...}`: a timeout, see `tasker.core.deadlines`); `deadline_at` is when
    it times out (None: no `TaskHandler.timeout`).
    """

    task_id: int
    name: str
    version: str
    status: str
    context: Any
    tags: Sequence[str]
    initiator: str
    source_system: str
    reason: str
    requested_at: datetime
    completed_at: datetime | None
    idempotency_key: str | None = None
    next_run_at: datetime | None = None
    steps: Mapping[str, StepView] = field(default_factory=dict)
    annotations: Sequence[AnnotationView] = ()
    bypass_steps: Sequence[str] = ()
    subject: str | None = None
    created_at: datetime | None = None
    parent_task_id: int | None = None
    children: Sequence[int] = ()
    # Why the task itself ended in error (a task timeout), else None.
    error: dict[str, Any] | None = None
    deadline_at: datetime | None = None
