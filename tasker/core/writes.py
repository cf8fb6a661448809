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
from datetime import datetime, timedelta
from typing import Any, Protocol

from tasker.core import branches as branch_rules
from tasker.core import deadlines, flow, items, spawns, waits
from tasker.core.events import Assignment, Event, assign
from tasker.core.flow import AttemptOutcome
from tasker.core.planner import HELD_EVENT, StepState, Verdict, plan
from tasker.core.states import AWAIT_CHILDREN, Status
from tasker.core.views import StepView
from tasker.errors import NoDecisionError
from tasker.store.audit import StepChange
from tasker.store.lease import Finish

#: The error recorded for a step left `in_progress` by a worker whose lease expired.
WORKER_LOST = {
    "message": "worker lost: the step was in progress when its worker's lease expired",
    "error_class": "tasker.errors.WorkerLostError",
    "backtrace": "",
}


class StepRules(Protocol):
    """What `decide` reads of a step's template (`tasker.definition.template.StepTemplate`)."""

    @property
    def max_reattempts(self) -> int | None:
        """At most this many reattempt requests (None: no bound)."""

    @property
    def on_failure(self) -> str:
        """What a step with no attempt left does."""

    @property
    def branches(self) -> Mapping[str, Sequence[str]] | None:
        """A decision step's branches (label -> step names), else None."""

    def timing(self) -> tuple[float | None, float | None, float | None]:
        """`wait`, `after` and `wait_timeout` in seconds."""


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
        consumed: (event_id, workflow_step_id) of each event a step it starts consumes.
        events: the event each started `wait_for` step runs with, by step name.
        spawned: the children the recorded outcomes spawned (`NewTask` rows, ids
            handed out ahead), inserted by the write.
        idle: the write releases the task idle until nudged (`Verdict.IDLE`).
    """

    steps: dict[str, StepView] = field(default_factory=dict)
    changes: list[StepChange] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    finish: Finish | None = None
    notify_at: datetime | None = None
    wake_at: datetime | None = None
    asked: tuple[str, str] | None = None
    consumed: list[tuple[int, int]] = field(default_factory=list)
    events: dict[str, Event] = field(default_factory=dict)
    spawned: list[Any] = field(default_factory=list)
    idle: bool = False


#: Why a held step is held, and until when it must be looked at again (or None).
Held = Mapping[str, tuple[str, datetime | None]]


def states(views: Mapping[str, StepView], held: Held | None = None) -> dict[str, StepState]:
    """What the planner needs of each step, in the views' (topological) order."""
    holds = held or {}
    return {
        name: StepState(
            name=name,
            status=Status(v.status),
            next_attempt_at=v.next_attempt_at,
            depends_on=v.depends_on,
            held=holds[name][0] if name in holds else None,
            held_until=holds[name][1] if name in holds else None,
            awaiting=_awaits(v),
        )
        for name, v in views.items()
    }


def _awaits(v: StepView) -> bool:
    """In progress with no thread: its handler returned and it awaits children or items."""
    return v.status == Status.IN_PROGRESS.value and v.awaiting is not None


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
    events: Sequence[Event] = (),
    children: Mapping[str, spawns.Children] | None = None,
    limited: Held | None = None,
    limit_waited: Collection[str] = (),
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
        events: the task's events (`tasker.core.events`); a `wait_for` step starts only
            with one, and one still waiting past its `wait_timeout` fails for good.
        children: for steps awaiting their children, what those are as last read
            (`spawns.Children`); a step awaiting children absent here stays as it is.
        limited: steps refused a slot by their dependent system's limit (held, each
            until it is worth asking again), so not started by this write.
        limit_waited: steps that were held back by a limit in this pass (their start is
            recorded as coming after a limit wait).
    """
    w = Write(asked=asked)
    templates = steps or {}
    created = created_at or now
    if deadline is not None and deadlines.timed_out(deadline, now):
        w.steps, w.changes, w.finish = deadlines.time_out(views, created, deadline)
        return w
    lost: list[AttemptOutcome] = []
    if recover:  # a step awaiting children or items has no thread: it is not lost
        lost = [
            flow.Attempt(n, error=dict(WORKER_LOST))
            for n, v in views.items()
            if v.status == Status.IN_PROGRESS.value and not _awaits(v)
        ]
    fresh: set[str] = set()  # steps that just spawned children not inserted yet
    deciding: dict[str, tuple[str, ...]] = {}  # decision steps that now await children
    for o in [*lost, *outcomes]:
        _record(w, views, o, now, rules, templates.get(o.name), created)
        if any(s.new is not None and s.wait for s in o.spawned) and _awaits(w.steps[o.name]):
            fresh.add(o.name)
        if o.ok and o.decision is not None and _awaits(w.steps[o.name]):
            deciding[o.name] = tuple(o.decision)
    current = {**views, **w.steps} if w.steps else views
    if children:
        _settle(w, current, children, fresh, now, templates, deciding)
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
    offers = assign(current, events, now) if events or _any_wait_for(current) else Assignment()
    held = _hold_for_events(w, current, offers, templates, created, now)
    current = {**views, **w.steps} if w.steps else views
    if w.asked is not None:  # a wait_timeout with on_failure="pause"/"cancel"
        _end_as_asked(w, current, running, busy)
        if w.finish is None:
            w.wake_at = deadline
        return w
    held.update(limited or {})
    _advance(w, current, now, rules, running, busy, stopping, held, offers, limit_waited)
    if deadline is not None:  # wake the pass, or the released task, at the deadline
        _cap(w, deadline)
    return w


def _cap(w: Write, deadline: datetime) -> None:
    """No wake-up later than the deadline: the pass's, or the released task's.

    A task released idle (no wake-up: it waits for an event or its children) wakes at the
    deadline too, or it would never time out.
    """
    if w.finish is None:
        w.wake_at = deadlines.sooner(w.wake_at, deadline)
    f = w.finish
    if f is not None and f.to_status is None:
        w.finish = replace(f, wake_at=deadlines.sooner(f.wake_at, deadline))
        w.notify_at = w.finish.wake_at


def _any_wait_for(views: Mapping[str, StepView]) -> bool:
    return any(v.wait_for is not None for v in views.values())


def _hold_for_events(
    w: Write,
    views: Mapping[str, StepView],
    offers: Assignment,
    templates: Mapping[str, StepRules],
    created: datetime,
    now: datetime,
) -> dict[str, tuple[str, datetime | None]]:
    """Hold the steps still waiting for their event; fail those past their `wait_timeout`.

    Returns:
        The held steps (`Held`), each until its `wait_timeout` ends (None: no timeout).
    """
    held: dict[str, tuple[str, datetime | None]] = {}
    for name in offers.waiting:
        v = views[name]
        t = templates.get(name)
        timeout = t.timing()[2] if t is not None else None
        if timeout is None:
            held[name] = (HELD_EVENT, None)
            continue
        deadline = waits.since(v, views, created) + timedelta(seconds=timeout)
        if deadline > now:
            held[name] = (HELD_EVENT, deadline)
            continue
        assert t is not None
        rules = flow.Rules(v.retry_limit, v.retryable, t.max_reattempts, t.on_failure, timeout)
        rec = flow.wait_timed_out(v, rules, now, deadline, f"event {v.wait_for!r}")
        if rec.halt is not None and (w.asked is None or rec.halt == flow.CANCEL):
            w.asked = (rec.halt, rec.task_reason)
        w.steps[name] = rec.view
        w.changes.append(
            StepChange(
                v.workflow_step_id, name, Status(v.status), Status(rec.view.status), v.attempts,
                rec.reason, rec.details,
            )
        )  # fmt: skip
    return held


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


def _rules(v: StepView, template: StepRules | None) -> flow.Rules:
    """The step's rules: its row's budget, and its template's failure rules."""
    if template is None:
        return flow.Rules(v.retry_limit, v.retryable)
    return flow.Rules(
        v.retry_limit,
        v.retryable,
        template.max_reattempts,
        template.on_failure,
        template.timing()[2],
    )


def _settle(
    w: Write,
    views: Mapping[str, StepView],
    children: Mapping[str, spawns.Children],
    fresh: Collection[str],
    now: datetime,
    templates: Mapping[str, StepRules],
    deciding: Mapping[str, Sequence[str]],
) -> None:
    """Complete or fail the steps awaiting children whose children all ended.

    A decision step that completes applies the decision it kept (`Children.decision`,
    or that of its outcome recorded by this write, in `deciding`): the branches it did
    not take are skipped in this write.
    """
    for name, kids in children.items():
        v = views.get(name)
        if v is None or name in fresh or not _awaits(v) or v.awaiting != AWAIT_CHILDREN:
            continue
        template = templates.get(name)
        step_rules = _rules(v, template)
        rec = spawns.settle(v, kids, step_rules, now)
        if rec is None:
            continue
        branches = template.branches if template is not None else None
        chosen: Sequence[str] = ()
        if branches and rec.view.status == Status.COMPLETE.value:
            kept = deciding.get(name, kids.decision)
            rec, chosen = _apply_kept(v, rec, branches, kept, step_rules, now)
        if rec.halt is not None and (w.asked is None or rec.halt == flow.CANCEL):
            w.asked = (rec.halt, rec.task_reason)
        w.steps[name] = rec.view
        w.changes.append(
            StepChange(
                v.workflow_step_id,
                name,
                Status(v.status),
                Status(rec.view.status),
                v.attempts,
                rec.reason,
                rec.details,
            )
        )
        if chosen and branches:
            _skip_not_taken(w, {**views, **w.steps}, name, branches, chosen, now)


def _apply_kept(
    v: StepView,
    done: flow.Recorded,
    branches: Mapping[str, Sequence[str]],
    kept: Sequence[str] | None,
    rules: flow.Rules,
    now: datetime,
) -> tuple[flow.Recorded, Sequence[str]]:
    """A decision step whose awaited children are all done, and the labels it kept.

    Returns:
        The step complete with its decision (the labels to apply), or failed for good
        with `NoDecisionError` (no labels) when no decision was kept or it names a
        branch the step does not have.
    """
    if kept:
        msg = branch_rules.unknown_labels(v.name, branches, kept)
        if msg is None:
            return flow.Recorded(done.view, f"{done.reason}; {branch_rules.said(kept)}"), kept
    else:
        msg = (
            f"decision step {v.name!r}: its sub-tasks are done but no decision was kept "
            "with the outcome that spawned them"
        )
    error = flow.error_of(NoDecisionError, msg)
    waiting = replace(v, awaiting=None)
    return flow.failed_for_good(waiting, error, rules, now, f"NoDecisionError: {msg}"), ()


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
    if o.flow == items.AWAIT:  # a for_each step's items wait for their retries
        waiting = items.await_items(v, now + timedelta(seconds=o.wait or 0.0))
        w.steps[v.name] = waiting
        w.changes.append(
            StepChange(
                v.workflow_step_id, v.name, Status(v.status), Status.IN_PROGRESS, v.attempts,
                f"waiting for items: {o.reason}",
            )
        )  # fmt: skip
        return
    step_rules = _rules(v, template)
    since = waits.since(v, views, created)
    rec = flow.record_outcome(v, o, step_rules, now, since, (rules.backoff_base, rules.backoff_max))
    if rec.halt is not None and (w.asked is None or rec.halt == flow.CANCEL):
        w.asked = (rec.halt, rec.task_reason)
    new, reason = rec.view, rec.reason
    if o.ok and o.spawned:  # children are inserted by this write; their parent may wait
        w.spawned.extend(s.new for s in o.spawned if s.new is not None)
        awaiting = spawns.await_children(new, o.spawned)
        awaited = sum(1 for s in o.spawned if s.wait)
        reason = f"spawned {len(o.spawned)} sub-task(s)"
        if awaiting is not None:
            new, reason = awaiting, f"{reason}; waiting for {awaited}"
    w.steps[v.name] = new
    decided = o.decision is not None and new.status == Status.COMPLETE.value
    said, details = (branch_rules.said(o.decision or ()) if decided else reason), rec.details
    if o.decision is not None and new.awaiting == AWAIT_CHILDREN:
        # Applied once its children are done: kept until then with this outcome.
        said, details = f"{reason}; {branch_rules.said(o.decision)}", branch_rules.keep(o.decision)
    w.changes.append(
        StepChange(
            v.workflow_step_id,
            v.name,
            Status(v.status),
            Status(new.status),
            v.attempts,
            said,
            details,
        )
    )
    if decided and template is not None and template.branches:
        _skip_not_taken(w, {**views, **w.steps}, v.name, template.branches, o.decision or (), now)


def _skip_not_taken(
    w: Write,
    views: Mapping[str, StepView],
    decider: str,
    branches: Mapping[str, Sequence[str]],
    chosen: Sequence[str],
    now: datetime,
) -> None:
    """Skip the steps of the branches a decision did not take, in the same write."""
    for name, reason in branch_rules.not_taken(views, decider, branches, chosen).items():
        v = views[name]
        w.steps[name] = replace(
            v, status=Status.SKIPPED.value, results=None, next_attempt_at=None, processed_at=now
        )
        w.changes.append(
            StepChange(
                v.workflow_step_id, name, Status(v.status), Status.SKIPPED, v.attempts, reason
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
    held: Held | None = None,
    offers: Assignment | None = None,
    limit_waited: Collection[str] = (),
) -> None:
    """Start what is ready (within the concurrency bound), or end the pass.

    A `wait_for` step started with an offered event consumes it in this write.
    """
    decision = plan(states(views, held), now, running)
    if decision.verdict is Verdict.RUN:
        w.wake_at = decision.wake_at
        room = 0 if stopping else max(rules.max_concurrent_steps - busy, 0)
        for name in decision.ready[:room]:
            v = views[name]
            if _awaits(v):  # items due again: the item runner goes on, no new attempt
                w.changes.append(
                    StepChange(
                        v.workflow_step_id, name, Status.IN_PROGRESS, Status.IN_PROGRESS,
                        v.attempts, "items resumed",
                    )
                )  # fmt: skip
                w.steps[name] = replace(v, awaiting=None, next_attempt_at=None)
                w.started.append(name)
                continue
            event = offers.event_of(name) if offers is not None else None
            why = "started"
            if event is not None:
                w.events[name] = event
                if event.consumed_by is None:  # consumed now, by this step, in this write
                    w.consumed.append((event.event_id, v.workflow_step_id))
                    why = f"started: consumed event {event.name!r} (#{event.event_id})"
            if name in limit_waited:
                why += f" after waiting for the limit of {v.dependent_system!r}"
            w.changes.append(
                StepChange(
                    v.workflow_step_id, name, Status(v.status), Status.IN_PROGRESS,
                    v.attempts + 1, why,
                )
            )  # fmt: skip
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
    elif decision.verdict is Verdict.IDLE:
        # Nothing to come back for at a time: a signal, a finished child or an item's
        # outcome nudges the task.
        kinds = ", ".join(decision.held or ()) or "its children or items"
        w.finish = Finish(None, None, f"idle until nudged: waiting for {kinds}")
        w.idle = True
    elif decision.verdict is Verdict.COMPLETE:
        w.finish = Finish(Status.COMPLETE, None, "all steps done")
    else:
        failed = [n for n, v in views.items() if v.status == Status.ERROR.value]
        w.finish = Finish(Status.ERROR, None, f"no attempt left for: {', '.join(failed)}")
