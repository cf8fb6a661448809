"""The objects a step handler and `update_annotations` receive."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from tasker.core.jsonvalue import json_problem
from tasker.core.views import StepView
from tasker.errors import InvalidRequestError, StepNotFoundError


class HandlerTask:
    """The task as a handler sees it.

    Attributes:
        task_id, name, version, context, tags, initiator, source_system, reason,
        requested_at: the task's request, as stored.
    """

    def __init__(self, row: Mapping[str, Any]) -> None:
        self.task_id: int = row["task_id"]
        self.name: str = row["name"]
        self.version: str = row["version"]
        self.context: dict[str, Any] = row["context"]
        self.tags: list[str] = list(row["tags"])
        self.initiator: str = row["initiator"]
        self.source_system: str = row["source_system"]
        self.reason: str = row["reason"]
        self.requested_at: datetime = row["requested_at"]
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

    def take_annotations(self) -> list[tuple[str, dict[str, Any]]]:
        """Hand over the annotations collected so far (engine use)."""
        taken, self.pending_annotations = self.pending_annotations, []
        return taken


class HandlerStep:
    """The step being run: read `inputs`, set `results` (or return them).

    Attributes:
        name, workflow_step_id, depends_on, dependent_system, retry_limit, retryable:
            the step's definition.
        attempts: the number of this attempt (1 for the first).
        inputs: the step's inputs (the task context unless set otherwise).
        results: what the step produced; assign it, or return a dict from `handle`.
        status: the step's status (in `update_annotations`: the outcome).
        error: the previous attempt's error (None on the first attempt).
    """

    def __init__(self, view: StepView) -> None:
        self.name = view.name
        self.workflow_step_id = view.workflow_step_id
        self.depends_on = view.depends_on
        self.dependent_system = view.dependent_system
        self.retry_limit = view.retry_limit
        self.retryable = view.retryable
        self.attempts = view.attempts
        self.inputs = view.inputs
        self.results: Any = view.results
        self.status = view.status
        self.error = view.error


class StepSequence:
    """Every step of the task, for a handler to read others' results."""

    def __init__(self, lookup: Callable[[str], StepView | None], names: tuple[str, ...]) -> None:
        self._lookup = lookup
        self._names = names

    def step(self, name: str) -> StepView:
        """The view of step `name`.

        Raises:
            StepNotFoundError: the task has no such step.
        """
        view = self._lookup(name)
        if view is None:
            raise StepNotFoundError(f"this task has no step {name!r} (steps: {list(self._names)})")
        return view

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
