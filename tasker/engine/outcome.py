"""Running one attempt of a step handler and describing what happened."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tasker.core import branches as branch_rules
from tasker.core.flow import CANCEL, SKIP, FlowRequest
from tasker.core.jsonvalue import json_problem
from tasker.core.spawns import Spawn
from tasker.definition.decision import Decision
from tasker.definition.template import StepTemplate
from tasker.engine.observer import Observer
from tasker.engine.runtime import HandlerStep, HandlerTask, StepSequence
from tasker.errors import (
    InvalidResultError,
    NoDecisionError,
    PermanentError,
    RetryableError,
    StepTimeoutError,
)

if TYPE_CHECKING:
    from tasker.engine.attempt_tx import Held


@dataclass
class Outcome:
    """The result of one attempt: results, or an error that may ask for a delay."""

    name: str
    token: object
    ok: bool
    results: Any = None
    error: dict[str, Any] | None = None
    retry_after: float | None = None
    permanent: bool = False
    timed_out: bool = False
    annotations: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # A flow-control request that ended the run (`tasker.core.flow`): not a failed attempt.
    flow: str | None = None
    wait: float | None = None
    reason: str = ""
    # The sub-tasks a succeeded attempt spawned (a failed one spawns nothing).
    spawned: list[Spawn] = field(default_factory=list)
    # A transactional step's transaction, still open: the write that records this
    # outcome goes through it (`tasker.engine.transactional`).
    held: Held | None = None
    # The labels a decision step chose (`tasker.Decision`); None for any other step.
    decision: tuple[str, ...] | None = None

    @classmethod
    def after_time_limit(cls, name: str, token: object, limit: float) -> Outcome:
        """The outcome of an attempt that ran past its time limit.

        Its error is a `StepTimeoutError`, described like any other (the handler's own
        thread may still run, so there is no backtrace of it to record).
        """
        timeout = StepTimeoutError(f"the step ran past its time limit of {limit:g} s")
        return cls(name, token, ok=False, timed_out=True, error=describe(timeout))


def describe(exc: BaseException) -> dict[str, Any]:
    """The stored form of an exception: message, qualified class and backtrace."""
    cls = type(exc)
    return {
        "message": str(exc),
        "error_class": f"{cls.__module__}.{cls.__qualname__}",
        "backtrace": "".join(traceback.format_exception(exc)),
    }


def decided(name: str, branches: Mapping[str, Sequence[str]], returned: Any) -> tuple[str, ...]:
    """The labels a decision step's handler chose.

    Raises:
        NoDecisionError: it returned no `Decision`, one with no label, or an unknown label.
    """
    known = sorted(branches)
    if not isinstance(returned, Decision):
        raise NoDecisionError(
            f"decision step {name!r} returned {type(returned).__name__} instead of "
            f"tasker.Decision(label, ...) with one of {known}"
        )
    if not returned.labels:
        raise NoDecisionError(f"decision step {name!r} returned a Decision with no label")
    unknown = branch_rules.unknown_labels(name, branches, returned.labels)
    if unknown is not None:
        raise NoDecisionError(unknown)
    return returned.labels


def run_handler(
    template: StepTemplate,
    task: HandlerTask,
    sequence: StepSequence,
    step: HandlerStep,
    token: object,
    deliver: Callable[[Outcome], None],
    cancel_if: Callable[[HandlerTask, StepSequence], Any] | None = None,
) -> None:
    """Run one attempt and deliver its outcome; never raises.

    First the task handler's `cancel_if` (True cancels the task) and the step's `run_if`
    (False skips the step), then the handler. A dict return value becomes the results;
    None keeps `step.results`. Anything else, or results that cannot be stored as JSON,
    fails the attempt; a flow-control request (`FlowRequest`) ends it without failing.
    """
    task._in_run = step._in_run = True
    try:
        if cancel_if is not None and cancel_if(task, sequence):
            raise FlowRequest(CANCEL, reason="cancel_if returned True")
        if template.run_if is not None and not template.run_if(task, sequence):
            raise FlowRequest(SKIP, reason="run_if returned False")
        returned = template.call(task, sequence, step)
        decision = None
        if template.branches is not None:
            decision = decided(template.name, template.branches, returned)
            returned = returned.results
        results = step.results if returned is None else returned
        if results is not None and not isinstance(results, dict):
            raise InvalidResultError(
                f"step {step.name!r} returned a {type(results).__name__}; return a dict or None"
            )
        problem = json_problem(results)
        if problem:
            raise InvalidResultError(f"step {step.name!r} results cannot be stored: {problem}")
        outcome = Outcome(
            step.name, token, ok=True, results=results, decision=decision,
            spawned=step.take_spawns(),
        )  # fmt: skip
    except FlowRequest as req:
        outcome = Outcome(
            step.name, token, ok=False, flow=req.kind, wait=req.wait, reason=req.reason
        )
    except BaseException as exc:
        outcome = Outcome(
            step.name,
            token,
            ok=False,
            error=describe(exc),
            retry_after=exc.retry_after if isinstance(exc, RetryableError) else None,
            permanent=isinstance(exc, PermanentError),
        )
    finally:
        task._in_run = step._in_run = False
    outcome.annotations = task.take_annotations()
    deliver(outcome)


def observed(
    observer: Observer,
    task_name: str,
    task_id: int,
    attempt: int,
    template: StepTemplate,
    task: HandlerTask,
    sequence: StepSequence,
    step: HandlerStep,
    token: object,
    deliver: Callable[[Outcome], None],
    cancel_if: Callable[[HandlerTask, StepSequence], Any] | None = None,
) -> None:
    """`run_handler`, reporting the attempt's start and end to `observer` on this thread.

    The end is reported before the outcome is delivered, so what an observer makes of an
    attempt (a span, a count) is complete before the engine records it.
    """
    observer.on_attempt_started(task_id, task_name, step.name, attempt)
    began = time.perf_counter()

    def done(o: Outcome) -> None:
        seconds = time.perf_counter() - began
        observer.on_attempt_finished(task_id, task_name, o.name, o.ok, o.flow, seconds, o.error)
        deliver(o)

    run_handler(template, task, sequence, step, token, done, cancel_if)
