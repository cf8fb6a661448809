"""The JSON shapes of the HTTP API (pydantic models: they are the OpenAPI schema too).

The shapes of what the API returns about tasks are built from the view dataclasses
of `tasker.core.views` (`view_model`), so the views are declared in one place.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections import abc
from collections.abc import Mapping
from dataclasses import asdict
from types import GenericAlias, UnionType
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, create_model

from tasker.core.states import Status
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


#: What each view field means, where its name alone does not say (the OpenAPI
#: descriptions), by view class and field name.
DESCRIPTIONS: dict[type, dict[str, str]] = {
    StepView: {
        "status": "the stored status: " + ", ".join(s.value for s in Status),
        "attempts": "attempts started (reattempts are counted apart)",
        "depends_on": "the steps it waits for, from the task's stored edges",
        "inputs": "what its handler sees as step.inputs: its own inputs, else the task's context",
        "results": "its handler's results (null before it ran, or if skipped)",
        "error": "its last attempt's error: {message, error_class, backtrace, ...}, or null",
        "reattempts": "runs that asked to run again later (step.reattempt)",
        "awaiting": "what an in_progress step whose handler returned waits for: "
        "children or items (null otherwise)",
        "wait_for": "the event it waits for (StepTemplate.wait_for), or null",
        "waiting_for": "why a live step is not running now: dependencies, time, event:<name>, "
        "children, items, limit or paused (null when it runs or has finished)",
        "items": "a for_each step's item counts {total, complete, error, pending}, else null",
        "idempotency_key": "the same for every attempt of this step, unique across steps",
    },
    TaskView: {
        "status": "the stored status: "
        + ", ".join(s.value for s in Status if s is not Status.SKIPPED),
        "steps": "the step views, keyed by step name, in topological order",
        "idempotency_key": "the key its request was enqueued with, or null",
        "next_run_at": "when the engine next looks at it (a wait or backoff), or null",
        "bypass_steps": "the steps its request asked to skip (sorted)",
        "subject": "what the task is about (TaskRequest.subject), or null",
        "created_at": "when it was stored",
        "parent_task_id": "the task whose step spawned this one (null if no step did)",
        "children": "the ids of the tasks its steps spawned, in spawn order",
        "error": "why the task itself ended in error ({message, ...}, e.g. a task timeout), "
        "or null",
        "deadline_at": "when it times out (null: its handler has no timeout)",
    },
    TransitionView: {"step": "the step that changed (null: the task itself)"},
}


def _out_type(hint: Any, models: Mapping[type, type[BaseModel]]) -> Any:
    """The pydantic type of a view field's type hint (what its JSON holds).

    Nested views become their models, tuples and sequences lists, mappings dicts.
    """
    if hint in models:
        return models[hint]
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        return functools.reduce(operator.or_, (_out_type(a, models) for a in args))
    if origin in (tuple, list, abc.Sequence):
        return GenericAlias(list, (_out_type(args[0], models),))
    if origin in (dict, abc.Mapping):
        return GenericAlias(dict, tuple(_out_type(a, models) for a in args))
    return hint


def view_model(
    view: type, name: str, models: Mapping[type, type[BaseModel]] | None = None
) -> type[BaseModel]:
    """The API model of a view dataclass: a field for each of its fields, every one present.

    Built from the dataclass's fields and type hints, so a field added to a view is in
    the API and its OpenAPI schema with nothing else to change; `DESCRIPTIONS` describes
    them. `models` maps the nested views (e.g. `StepView`) to their models. Unknown
    fields are refused (`extra="forbid"`): the schema says all the JSON holds.

    Args:
        view: a dataclass of `tasker.core.views`.
        name: the model's (and its OpenAPI schema's) name.
        models: the models of the views its fields hold.
    """
    hints = get_type_hints(view)
    described = DESCRIPTIONS.get(view, {})
    fields: dict[str, Any] = {
        f.name: (
            _out_type(hints[f.name], models or {}),
            Field(description=described.get(f.name)),
        )
        for f in dataclasses.fields(view)
    }
    doc = (view.__doc__ or name).split("\n\n")[0].strip()
    return create_model(
        name, __config__=ConfigDict(extra="forbid"), __doc__=doc, __module__=__name__, **fields
    )


def page_model(item: type[BaseModel], name: str, doc: str) -> type[BaseModel]:
    """A page of `item`s: `{"items": [...], "next_cursor": str | null}`."""
    items: Any = GenericAlias(list, (item,))
    return create_model(
        name,
        __config__=ConfigDict(extra="forbid"),
        __doc__=doc,
        __module__=__name__,
        items=(items, ...),
        next_cursor=(
            str | None,
            Field(None, description="pass as `cursor` for the next page (null: the last)"),
        ),
    )


StepOut = view_model(StepView, "StepOut")
AnnotationOut = view_model(AnnotationView, "AnnotationOut")
TransitionOut = view_model(TransitionView, "TransitionOut")
TaskOut = view_model(TaskView, "TaskOut", {StepView: StepOut, AnnotationView: AnnotationOut})
TaskPage = page_model(TaskOut, "TaskPage", "A page of tasks, newest first.")
HistoryPage = page_model(TransitionOut, "HistoryPage", "A task's audit trail, oldest first.")
AnnotationPage = page_model(AnnotationOut, "AnnotationPage", "Annotations, oldest first.")


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


class BranchOut(BaseModel):
    """One branch of a decision step: the steps its label takes."""

    step: str = Field(description="the decision step")
    label: str = Field(description="the label its handler's `Decision` names")
    steps: list[str] = Field(description="the branch's steps, each depending on `step`")


class HandlerOut(BaseModel):
    """A registered task handler version and its DAG."""

    name: str
    version: str
    context_schema: dict[str, Any] | None = None
    steps: list[StepTemplateOut]
    edges: list[tuple[str, str]] = Field(description="[from, to] pairs: `to` depends on `from`")
    branches: list[BranchOut] = Field(
        default_factory=list,
        description="the branches of its decision steps, in step order then label order",
    )


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
