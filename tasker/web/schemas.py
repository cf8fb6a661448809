"""The JSON shapes of the HTTP API (pydantic models: they are the OpenAPI schema too)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from tasker.core.views import AnnotationView, StepView, TaskView, TransitionView

MAX_ID = 2**63 - 1
MAX_INT = 2**31 - 1

Text = Annotated[str, StringConstraints(max_length=255)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class EnqueueBody(BaseModel):
    """The `TaskRequest` fields: what to run."""

    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="a registered task name")
    context: dict[str, Any] = Field(default_factory=dict)
    version: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    initiator: Text = "unknown"
    source_system: Text = "unknown"
    reason: Text = "unknown"
    tags: list[Text] = Field(default_factory=list)
    bypass_steps: list[Name] = Field(default_factory=list)
    requested_at: AwareDatetime | None = None
    idempotency_key: Text | None = None
    subject: Text | None = None


class TaskPatch(BaseModel):
    """What `PATCH /tasks/{id}` may change."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    tags: list[Text] | None = None


class StepPatch(BaseModel):
    """What `PATCH /tasks/{id}/steps/{name}` may change, on a step not yet complete."""

    model_config = ConfigDict(extra="forbid")

    retry_limit: Annotated[int, Field(ge=1, le=MAX_INT)] | None = None
    inputs: dict[str, Any] | None = None


class StepOut(BaseModel):
    """A step view."""

    model_config = ConfigDict(extra="allow")

    workflow_step_id: int
    name: str
    status: str
    attempts: int
    retry_limit: int
    retryable: bool
    skippable: bool
    depends_on: list[str]
    dependent_system: str
    inputs: Any = None
    results: Any = None
    error: dict[str, Any] | None = None
    last_attempted_at: datetime | None = None
    next_attempt_at: datetime | None = None
    processed_at: datetime | None = None
    reattempts: int = 0
    waiting_for: str | None = Field(
        default=None,
        description="why a live step is not running now: dependencies, time, event:<name>, "
        "children, items, limit or paused (None when it runs or has finished)",
    )


class AnnotationOut(BaseModel):
    """One annotation."""

    task_id: int
    annotation_type: str
    annotation: Any = None
    created_at: datetime


class TaskOut(BaseModel):
    """A task view, with `steps` keyed by step name."""

    model_config = ConfigDict(extra="allow")

    task_id: int
    name: str
    version: str
    status: str
    context: Any = None
    tags: list[str]
    initiator: str
    source_system: str
    reason: str
    requested_at: datetime
    completed_at: datetime | None = None
    idempotency_key: str | None = None
    next_run_at: datetime | None = None
    steps: dict[str, StepOut]
    annotations: list[AnnotationOut] = Field(default_factory=list)
    bypass_steps: list[str] = Field(default_factory=list)
    subject: str | None = None
    created_at: datetime | None = None


class TaskPage(BaseModel):
    """A page of tasks, newest first; pass `next_cursor` as `cursor` for the next."""

    items: list[TaskOut]
    next_cursor: str | None


class TransitionOut(BaseModel):
    """One status change (`step` None: the task's own)."""

    step: str | None
    from_status: str | None
    to_status: str
    reason: str
    attempt: int | None
    created_at: datetime


class HistoryPage(BaseModel):
    """A task's audit trail, oldest first."""

    items: list[TransitionOut]
    next_cursor: str | None = None


class AnnotationPage(BaseModel):
    """Annotations, oldest first."""

    items: list[AnnotationOut]
    next_cursor: str | None = None


class StepTemplateOut(BaseModel):
    """One step of a handler's DAG."""

    name: str
    depends_on: list[str]
    dependent_system: str
    description: str
    retryable: bool
    retry_limit: int
    skippable: bool
    transactional: bool = False  # its writes commit with its outcome (`step.connection`)


class HandlerOut(BaseModel):
    """A registered task handler version and its DAG."""

    name: str
    version: str
    context_schema: dict[str, Any] | None = None
    steps: list[StepTemplateOut]
    edges: list[tuple[str, str]] = Field(description="[from, to] pairs: `to` depends on `from`")
    branches: list[dict[str, Any]] = Field(default_factory=list)


class HandlerPage(BaseModel):
    """Every registered handler version, by name then version."""

    items: list[HandlerOut]
    next_cursor: str | None = None


class Health(BaseModel):
    """Liveness: each check is "ok" or says what failed."""

    status: str
    checks: dict[str, str]


def task_json(view: TaskView) -> dict[str, Any]:
    """A task view as the JSON object of the API."""
    out = asdict(view)
    out["steps"] = {name: step_json(s) for name, s in view.steps.items()}
    out["annotations"] = [asdict(a) for a in view.annotations]
    return out


def step_json(view: StepView) -> dict[str, Any]:
    """A step view as the JSON object of the API."""
    return asdict(view)


def transition_json(view: TransitionView) -> dict[str, Any]:
    """A history entry as JSON."""
    return asdict(view)


def annotation_json(view: AnnotationView) -> dict[str, Any]:
    """An annotation as JSON."""
    return asdict(view)
