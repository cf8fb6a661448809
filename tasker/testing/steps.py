"""`run_step`: one step of a task handler run in isolation, with no database and no broker."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from tasker.core import flow
from tasker.core.clock import utc_now
from tasker.core.spawns import Spawn
from tasker.core.views import StepView
from tasker.definition.dag import topological_order
from tasker.definition.handler import TaskHandler
from tasker.definition.request import TaskRequest
from tasker.definition.template import StepTemplate
from tasker.engine.outcome import Outcome, run_handler
from tasker.engine.runtime import HandlerStep, HandlerTask, StepSequence
from tasker.errors import TaskerError


@dataclass(frozen=True)
class StepRun:
    """What one isolated run of a step did.

    Attributes:
        status: "complete" or "error"; after a flow-control request the status it leaves
            the step in: "pending" (reattempt, pause), "skipped" or "cancelled".
        results: the step's results (None when it failed).
        error: None, or the stored form of the error (`message`, `error_class`, `backtrace`).
        decision: the labels of a decision step's `Decision` (None otherwise).
        spawned: the requests of the sub-tasks the step spawned.
        flow: None, or the flow-control request that ended the run.
        wait: the wait of a `reattempt` request, in seconds (None otherwise).
        reason: the reason given with a flow-control request.
        annotations: the (type, annotation) pairs the handler recorded.
    """

    status: str
    results: Any
    error: dict[str, Any] | None
    decision: tuple[str, ...] | None = None
    spawned: tuple[Any, ...] = ()
    flow: str | None = None
    wait: Any = None
    reason: str = ""
    annotations: tuple[tuple[str, dict[str, Any]], ...] = field(default_factory=tuple)


def run_step(
    handler_class: type[TaskHandler],
    step_name: str,
    context: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
    item: Any = None,
    event: Any = None,
    *,
    attempt: int = 1,
    now: datetime | None = None,
    connection: Connection | None = None,
) -> StepRun:
    """Run one step of `handler_class` once, in this thread, the way a worker would.

    Args:
        handler_class: the `TaskHandler` subclass (it need not be registered anywhere).
        step_name: the step to run; the other steps do not run.
        context: the task's context (default: empty).
        results: the other steps' results by step name, for `sequence.step(name).results`;
            the steps named here look `complete`, the others `pending`.
        item: the collection item the handler sees (for a `for_each` step).
        event: the event payload the handler sees (for a `wait_for` step).
        attempt: the attempt number the handler sees as `step.attempts`.
        now: the task's `requested_at` (default: the current time).
        connection: for a transactional step, the `step.connection` its handler gets: yours,
            in your transaction, which `run_step` neither commits nor rolls back.

    Returns:
        A `StepRun` describing what the step did.

    Raises:
        TaskerError: the handler has no step `step_name`, or `connection` is given for a
            step that is not transactional.
    """
    templates: dict[str, StepTemplate] = {t.name: t for t in handler_class.step_templates}
    if step_name not in templates:
        raise TaskerError(
            f"task handler {handler_class.name!r} has no step {step_name!r}"
            f" (steps: {sorted(templates)})"
        )
    done = dict(results or {})
    order = topological_order(
        handler_class.name, {n: tuple(t.depends_on) for n, t in templates.items()}
    )
    views = {n: _view(i + 1, templates[n], done.get(n), n in done) for i, n in enumerate(order)}
    task = HandlerTask(
        {
            "task_id": 0,
            "name": handler_class.name,
            "version": handler_class.version,
            "context": copy.deepcopy(dict(context or {})),
            "tags": [],
            "initiator": "tasker.testing.run_step",
            "source_system": "",
            "reason": "",
            "requested_at": now or utc_now(),
        }
    )
    step = HandlerStep(views[step_name])
    step.attempts = attempt
    step.inputs = copy.deepcopy(task.context)  # a step's inputs default to the task's context
    for name, value in (("item", item), ("event", event)):
        setattr(step, name, value)
    step._spawner = _Spawns()
    if connection is not None and not templates[step_name].transactional:
        raise TaskerError(f"step {step_name!r} is not transactional: it takes no connection")
    step._transactional, step._connection = templates[step_name].transactional, connection
    outcomes: list[Outcome] = []
    run_handler(
        templates[step_name],
        task,
        StepSequence(views.get, tuple(order)),
        step,
        None,
        outcomes.append,
    )
    (outcome,) = outcomes
    status = flow.LEAVES.get(outcome.flow or "", "complete" if outcome.ok else "error")
    return StepRun(
        status=status,
        results=outcome.results if outcome.ok else None,
        error=outcome.error,
        decision=outcome.decision,
        flow=outcome.flow,
        wait=outcome.wait,
        reason=outcome.reason,
        annotations=tuple(outcome.annotations),
        spawned=tuple(s.new for s in outcome.spawned),
    )


class _Spawns:
    """`step.spawn` in isolation: checks nothing stored, hands out ids 1, 2, ...

    Each `Spawn.new` is the request itself (`StepRun.spawned`).
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def existing(self, step_id: int) -> dict[str, int]:
        return {}

    def spawn(
        self,
        parent_task_id: int,
        step_id: int,
        request: TaskRequest,
        key: str,
        wait: bool,
        before: dict[str, int],
        conn: Connection | None = None,
        earlier: Sequence[Spawn] = (),
    ) -> Spawn:
        return Spawn(key, next(self._ids), wait, request)


def _view(step_id: int, template: StepTemplate, results: Any, complete: bool) -> StepView:
    return StepView(
        workflow_step_id=step_id,
        name=template.name,
        status="complete" if complete else "pending",
        attempts=1 if complete else 0,
        retry_limit=template.retry_limit,
        retryable=template.retryable,
        skippable=template.skippable,
        depends_on=tuple(template.depends_on),
        dependent_system=template.dependent_system,
        inputs={},
        results=copy.deepcopy(results),
        error=None,
        last_attempted_at=None,
        next_attempt_at=None,
    )
