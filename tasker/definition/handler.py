"""`TaskHandler`: a named, versioned DAG of steps, the unit users register."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from tasker.definition.template import StepTemplate

if TYPE_CHECKING:
    from tasker.engine.runtime import HandlerStep, HandlerTask, StepSequence


class TaskHandler:
    """Base class for task handlers: a named, versioned DAG of steps.

    Class attributes:
        name: the task name that requests use.
        version: the handler version (default "0.1.0"); several may be registered.
        description: free text.
        context_schema: optional JSON Schema every context must satisfy.
        step_templates: the steps, a list of `StepTemplate`.
        one_per_subject: when True, at most one task of this name per
            `TaskRequest.subject` is not final (`DuplicateTaskError` otherwise).
        timeout: None, or a duration (seconds or `timedelta`): a task still unfinished
            that long after its `created_at` ends in `error` then, with
            `TaskView.error` saying it timed out (`tasker.core.deadlines`).

    A subclass may define `on_finish(self, task)`: called with the `TaskView` each time
    a task ends (`complete`, `error` or `cancelled`), after that status is committed, at
    least once even if a worker dies; what it raises is logged and recorded in the
    history, and never changes the task's status (`tasker.control.finishing`).
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.1.0"
    description: ClassVar[str] = ""
    context_schema: ClassVar[Mapping[str, Any] | None] = None
    step_templates: ClassVar[Sequence[StepTemplate]] = ()
    one_per_subject: ClassVar[bool] = False
    timeout: ClassVar[float | timedelta | None] = None

    def update_annotations(
        self, task: HandlerTask, sequence: StepSequence, steps: Sequence[HandlerStep]
    ) -> None:
        """Record annotations after steps were processed; the default does nothing.

        Args:
            task: the task; call `task.annotate(annotation_type, dict)`.
            sequence: every step of the task.
            steps: exactly the steps processed since the previous call, each once.
        """
