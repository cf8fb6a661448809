"""Time on pending steps, decided once: due times of waits and why a live step waits.

A step's "not before" time is its `next_attempt_at`: on a failed step the backoff of its
next attempt, on a pending step the due time of a `wait=`/`after=` or of a reattempt.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from tasker.core.states import SATISFIED, TASK_LIVE, Status
from tasker.core.views import StepView

_OPEN = (Status.PENDING.value, Status.ERROR.value)
#: The task statuses whose steps may wait for something: live, or paused until resumed.
#: A task that ended (in error too) runs none of its steps until a person steps in.
_WAITING = frozenset({*(s.value for s in TASK_LIVE), Status.PAUSED.value})
_SATISFIED = frozenset(s.value for s in SATISFIED)


def satisfied_at(done_at: Iterable[datetime | None], created_at: datetime) -> datetime:
    """When the last of a step's dependencies was satisfied.

    Args:
        done_at: the `processed_at` of each dependency (all satisfied).
        created_at: when the task was created (the answer for a step with no dependencies).
    """
    times = [t for t in done_at if t is not None]
    return max(times, default=created_at)


def wait_due(
    wait: float | None, after: float | None, since: datetime, created_at: datetime
) -> datetime | None:
    """When a step with `wait=` and `after=` (seconds) may start; the later time wins.

    Args:
        since: when its last dependency was satisfied (`satisfied_at`).
        created_at: when the task was created.

    Returns:
        None when the step has neither.
    """
    times = []
    if wait is not None:
        times.append(since + timedelta(seconds=wait))
    if after is not None:
        times.append(created_at + timedelta(seconds=after))
    return max(times, default=None)


def waiting_for(
    status: str,
    deps_satisfied: bool,
    next_attempt_at: datetime | None,
    task_status: str,
    awaiting: str | None = None,
    event: str | None = None,
    limited: bool = False,
) -> str | None:
    """Why a live step (of a live or paused task) is not running now, or None.

    Args:
        awaiting: what an in-progress step whose handler returned awaits, else None.
        event: the event a pending step still waits for (its `wait_for`, when it has
            consumed none yet), else None.
        limited: the step is held back by its dependent system's limit.

    Returns:
        "children" or "items" (its handler returned; it awaits those: `awaiting`),
        "paused" (its task is paused), "dependencies" (a step it depends on is not
        satisfied), "time" (a wait, a backoff or a reattempt is due at
        `next_attempt_at`), "limit", "event:<name>", or None (running, finished, failed
        for good, ready, or a step of a task that ended: complete, cancelled, resolved,
        or in `error`, where a pending step will not run unless a person retries it).
    """
    if task_status not in _WAITING:
        return None
    if status == Status.IN_PROGRESS.value and awaiting is not None:
        return awaiting
    if status not in _OPEN:
        return None
    if status == Status.ERROR.value and next_attempt_at is None:
        return None
    if task_status == Status.PAUSED.value:
        return "paused"
    if not deps_satisfied:
        return "dependencies"
    if next_attempt_at is not None:
        return "time"
    if limited:
        return "limit"
    if event is not None and status == Status.PENDING.value:
        return f"event:{event}"
    return None


def awaits_event(v: StepView) -> bool:
    """Whether the step may still be waiting for its event (reads then ask which did)."""
    return v.wait_for is not None and v.status == Status.PENDING.value


def with_waiting_for(
    steps: Mapping[str, StepView],
    task_status: str,
    holding: Collection[int] = (),
    limited: Collection[int] = (),
) -> dict[str, StepView]:
    """The views of one task's steps with their `waiting_for` filled in.

    Args:
        holding: the ids of the steps that have consumed their event.
        limited: the ids of the steps held back by a limit (`tasker_limit_waits`).
    """
    done = {n for n, v in steps.items() if v.status in _SATISFIED}
    return {
        n: replace(
            v,
            waiting_for=waiting_for(
                v.status,
                all(d in done for d in v.depends_on),
                v.next_attempt_at,
                task_status,
                v.awaiting,
                v.wait_for if v.workflow_step_id not in holding else None,
                v.workflow_step_id in limited,
            ),
        )
        for n, v in steps.items()
    }


def since(view: StepView, steps: Mapping[str, StepView], created_at: datetime) -> datetime:
    """When step `view`'s dependencies were satisfied (see `satisfied_at`)."""
    return satisfied_at((steps[d].processed_at for d in view.depends_on), created_at)


def due_waits(
    steps: Mapping[str, StepView],
    waits: Mapping[str, tuple[float | None, float | None]],
    created_at: datetime,
    now: datetime,
) -> dict[str, datetime]:
    """The due times to store on pending steps whose `wait=`/`after=` has not passed.

    Args:
        steps: every step of the task.
        waits: (wait, after) in seconds of the steps that have either.
        created_at: when the task was created.
        now: the app's clock.

    Returns:
        Step name -> due time, for each pending step with its dependencies satisfied,
        no due time stored yet, and a wait that ends after `now`.
    """
    due = {}
    for name, (wait, after) in waits.items():
        v = steps.get(name)
        if v is None or v.status != Status.PENDING.value or v.next_attempt_at is not None:
            continue
        if not all(steps[d].status in _SATISFIED for d in v.depends_on):
            continue
        at = wait_due(wait, after, since(v, steps, created_at), created_at)
        if at is not None and at > now:
            due[name] = at
    return due


def after_problems(
    order: Iterable[str],
    depends_on: Mapping[str, Iterable[str]],
    timing: Mapping[str, tuple[float | None, float | None]],
) -> list[str]:
    """The steps whose `after=` is earlier than their dependencies' waits allow.

    Each step's earliest start (seconds after the task's creation, were every step
    instant) is the later of its dependencies' earliest starts plus its `wait`, and its
    `after`; an `after` below the dependencies' earliest start would never matter.

    Args:
        order: the step names, in topological order.
        depends_on: each step's dependencies.
        timing: each step's (wait, after) in seconds.

    Returns:
        One message per such step (empty: none).
    """
    earliest: dict[str, float] = {}
    problems = []
    for name in order:
        wait, after = timing.get(name, (None, None))
        floor = max((earliest[d] for d in depends_on.get(name, ())), default=0.0)
        if after is not None and after < floor:
            problems.append(
                f"step {name!r}: after={after:g} s is earlier than its dependencies allow "
                f"(their waits put it at least {floor:g} s after the task's creation)"
            )
        earliest[name] = max(floor + (wait or 0.0), after or 0.0)
    return problems
