"""Pure decisions of what one engine write stores.

The outcomes it records, the steps it starts, and how the pass goes on.

No I/O here: the engine feeds in the steps' views, the attempts' outcomes and what it
is running, and executes the `Write` it gets back (stores it, fenced by its lease, then
starts the steps' threads and sends any message). The planner decides what is ready;
this decides the new state of every step a write changes and its transition.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from tasker.core import deadlines, flow, waits
from tasker.core.planner import StepState, Verdict, plan
from tasker.core.states import Status
from tasker.core.views import StepView
from tasker.store.audit import StepChange
from tasker.store.lease import Finish

#: The error recorded for a step left `in_progress` by a worker whose lease expired.
WORKER_LOST = {
    "message": "worker lost: the step was in progress when its worker's lease expired",
    "error_class": "tasker.errors.WorkerLostError",
    "backtrace": "",
}


class AttemptOutcome(Protocol):
    """What `decide` reads of one attempt's outcome (`tasker.engine.outcome.Outcome`)."""

    name: str
    ok: bool
    results: Any
    error: dict[str, Any] | None
    retry_after: float | None
    permanent: bool
    flow: str | None
    wait: float | None
    reason: str


class StepRules(Protocol):
    """What `decide` reads of a step's template (`tasker.definition.template.StepTemplate`)."""

    @property
    def max_reattempts(self) -> int | None:
        """At most this many reattempt requests (None: no bound)."""

    @property
    def on_failure(self) -> str:
        """What a step with no attempt left does."""

    def timing(self) -> tuple[float | None, float | None, float | None]:
        """`wait`, `after` and `wait_timeout` in seconds."""


@dataclass
class _Lost:
    name: str
    ok: bool = False
    results: Any = None
    error: dict[str, Any] | None = field(default_factory=lambda: dict(WORKER_LOST))
    retry_after: float | None = None
    permanent: bool = False
    flow: str | None = None
    wait: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class Rules:
    """The settings the decisions follow."""

    backoff_base: float
    backoff_max: float
    max_concurrent_steps: int


@dataclass
class Write:
    """What one write stores and what the engine does after it commits.

    Attributes:
        steps: the new view of every step the write changes, by name.
        changes: their transitions, in order.
        started: the steps it starts (their threads start after the commit).
        finish: how it ends the pass (complete, error, or released until
            `finish.wake_at`); None to go on holding the lease.
        notify_at: a message to send once it commits (for a released task).
        wake_at: while the pass goes on, when a retry that is not ready yet falls due.
        asked: a step's request to pause or cancel the task ("pause"/"cancel", the
            reason), kept by the pass until a write ends it.
    """

    steps: dict[str, StepView] = field(default_factory=dict)
    changes: list[StepChange] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    finish: Finish | None = None
    notify_at: datetime | None = None
    wake_at: datetime | None = None
    asked: tuple[str, str] | None = None


def states(views: Mapping[str, StepView]) -> dict[str, StepState]:
    """What the planner needs of each step, in the views' (topological) order."""
    return {
        name: StepState(
            name=name,
            status=Status(v.status),
            next_attempt_at=v.next_attempt_at,
            depends_on=v.depends_on,
        )
        for name, v in views.items()
    }


def decide(
    views: Mapping[str, StepView],
    outcomes: Sequence[AttemptOutcome],
    now: datetime,
    rules: Rules,
    *,
    running: Collection[str] = (),
    busy: int = 0,
    stopping: bool = False,
    recover: bool = False,
    steps: Mapping[str, StepRules] | None = None,
    created_at: datetime | None = None,
    asked: tuple[str, str] | None = None,
    deadline: datetime | None = None,
) -> Write:
    """Decide one write: record `outcomes`, then start what is ready or end the pass.

    Args:
        views: every step of the task as the pass knows it, in topological order.
        outcomes: the attempts that ended since the last write.
        now: the app's clock.
        rules: backoff and concurrency settings.
        running: the steps whose threads still run after these outcomes (attempts
            past their time limit included: they are not started again meanwhile).
        busy: how many of them count against `max_concurrent_steps` (not those past
            their time limit).
        stopping: the worker is shutting down: start nothing, hand the task back.
        recover: the first write of a pass: steps left `in_progress` by a previous
            lease holder count as failed attempts ("worker lost").
        steps: the task's step templates by name (waits, reattempt and failure rules;
            a step without one has none).
        created_at: when the task was created (waits count from it; default `now`).
        asked: a pause or cancel asked by an earlier write's outcome (`Write.asked`).
        deadline: the task's timeout deadline (None: no timeout). Once it has passed the
            task ends in `error` and `outcomes` are refused (`tasker.core.deadlines`);
            until then every time the pass or the task waits for is capped by it.
    """
    w = Write(asked=asked)
    templates = steps or {}
    created = created_at or now
    if deadline is not None and deadlines.timed_out(deadline, now):
        _time_out(w, views, created, deadline)
        return w
    lost: list[AttemptOutcome] = []
    if recover:
        lost = [_Lost(n) for n, v in views.items() if v.status == Status.IN_PROGRESS.value]
    for o in [*lost, *outcomes]:
        _record(w, views, o, now, rules, templates.get(o.name), created)
    current = {**views, **w.steps} if w.steps else views
    if w.asked is not None:
        _end_as_asked(w, current, running, busy)
        if w.finish is None:  # a pause waits for the running steps, not past the deadline
            w.wake_at = deadline
        return w
    due = waits.due_waits(current, _waits(templates), created, now)
    for name, at in due.items():  # pending steps just ready whose wait has not passed
        w.steps[name] = replace(current[name], next_attempt_at=at)
    if due:
        current = {**current, **w.steps}
    _advance(w, current, now, rules, running, busy, stopping)
    if deadline is not None:  # wake the pass, or the released task, at the deadline
        if w.finish is None:
            w.wake_at = deadlines.sooner(w.wake_at, deadline)
        f = w.finish
        if f is not None and f.to_status is None and f.wake_at is not None:
            w.finish = replace(f, wake_at=deadlines.sooner(f.wake_at, deadline))
            w.notify_at = w.finish.wake_at
    return w


def _time_out(
    w: Write, views: Mapping[str, StepView], created: datetime, deadline: datetime
) -> None:
    """The task reached its deadline: it ends in `error`, and nothing runs any more.

    A running step's attempt ends in `error` (its outcome, when it comes, is refused);
    a failed step loses its next attempt; pending steps stay as they are.
    """
    for name, v in views.items():
        if v.status == Status.IN_PROGRESS.value:
            w.steps[name] = replace(
                v,
                status=Status.ERROR.value,
                error=deadlines.step_timeout_error(deadline),
                next_attempt_at=None,
            )
            w.changes.append(
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
            w.steps[name] = replace(v, next_attempt_at=None)
    error = deadlines.timeout_error(created, deadline)
    w.finish = Finish(Status.ERROR, None, error["message"], error)


def _waits(templates: Mapping[str, StepRules]) -> dict[str, tuple[float | None, float | None]]:
    """(wait, after) in seconds of the steps that have either."""
    out = {}
    for name, t in templates.items():
        wait, after, _ = t.timing()
        if wait is not None or after is not None:
            out[name] = (wait, after)
    return out


def _end_as_asked(
    w: Write, views: Mapping[str, StepView], running: Collection[str], busy: int
) -> None:
    """A step asked to pause or cancel the task: start nothing, and end the pass.

    A cancel ends it now (its unfinished steps are cancelled, running ones too: their
    outcomes no longer count); a pause once the running attempts have been recorded.
    """
    assert w.asked is not None
    kind, reason = w.asked
    if kind == flow.CANCEL:
        for name, v in views.items():
            if flow.unfinished(v):
                w.steps[name] = replace(v, status=Status.CANCELLED.value, next_attempt_at=None)
                w.changes.append(
                    StepChange(
                        v.workflow_step_id,
                        name,
                        Status(v.status),
                        Status.CANCELLED,
                        v.attempts,
                        reason,
                    )
                )
        w.finish = Finish(Status.CANCELLED, None, reason)
    elif busy == 0:
        w.finish = Finish(Status.PAUSED, None, reason)


def _record(
    w: Write,
    views: Mapping[str, StepView],
    o: AttemptOutcome,
    now: datetime,
    rules: Rules,
    template: StepRules | None,
    created: datetime,
) -> None:
    """The new state of a step whose attempt ended, and its transition.

    Decided by `tasker.core.flow.record_outcome`; a pause or cancel it asks for is kept
    in `w.asked` (a cancel wins over a pause).
    """
    v = views[o.name]
    if template is None:
        step_rules = flow.Rules(v.retry_limit, v.retryable)
    else:
        step_rules = flow.Rules(
            v.retry_limit,
            v.retryable,
            template.max_reattempts,
            template.on_failure,
            template.timing()[2],
        )
    attempt = flow.Attempt(
        o.ok, o.results, o.error, o.retry_after, o.permanent, o.flow, o.wait, o.reason
    )
    since = waits.since(v, views, created)
    rec = flow.record_outcome(
        v, attempt, step_rules, now, since, (rules.backoff_base, rules.backoff_max)
    )
    if rec.halt is not None and (w.asked is None or rec.halt == flow.CANCEL):
        w.asked = (rec.halt, rec.task_reason)
    new = rec.view
    w.steps[v.name] = new
    w.changes.append(
        StepChange(
            v.workflow_step_id,
            v.name,
            Status(v.status),
            Status(new.status),
            v.attempts,
            rec.reason,
            rec.details,
        )
    )


def _advance(
    w: Write,
    views: Mapping[str, StepView],
    now: datetime,
    rules: Rules,
    running: Collection[str],
    busy: int,
    stopping: bool,
) -> None:
    """Start what is ready (within the concurrency bound), or end the pass."""
    decision = plan(states(views), now, running)
    if decision.verdict is Verdict.RUN:
        w.wake_at = decision.wake_at
        room = 0 if stopping else max(rules.max_concurrent_steps - busy, 0)
        for name in decision.ready[:room]:
            v = views[name]
            w.changes.append(
                StepChange(
                    v.workflow_step_id,
                    name,
                    Status(v.status),
                    Status.IN_PROGRESS,
                    v.attempts + 1,
                    "started",
                )
            )
            w.steps[name] = replace(
                v,
                status=Status.IN_PROGRESS.value,
                attempts=v.attempts + 1,
                last_attempted_at=now,
                next_attempt_at=None,
            )
            w.started.append(name)
        if not running and not w.started:
            # Shutting down with nothing in flight: hand the task back, due now.
            w.finish = Finish(None, now, "worker shutting down")
            w.notify_at = now
    elif decision.verdict is Verdict.WAIT:
        w.finish = Finish(None, decision.wake_at, "waiting for a retry")
        w.notify_at = decision.wake_at
    elif decision.verdict is Verdict.COMPLETE:
        w.finish = Finish(Status.COMPLETE, None, "all steps done")
    else:
        failed = [n for n, v in views.items() if v.status == Status.ERROR.value]
        w.finish = Finish(Status.ERROR, None, f"no attempt left for: {', '.join(failed)}")
