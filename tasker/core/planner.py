"""Pure decisions of the engine: which steps are ready, and what the task is now.

No I/O here: the engine feeds in the steps' states and acts on the plan.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from tasker.core.states import SATISFIED, Status


@dataclass
class StepState:
    """What the planner needs to know of one step."""

    name: str
    status: Status
    next_attempt_at: datetime | None
    depends_on: tuple[str, ...]
    # In progress with no thread: its handler returned and it awaits its children or items.
    awaiting: bool = False
    # Why the step may not start though it is due ("event", "limit": `HELD_*`), or None;
    # something from outside nudges the task when that changes.
    held: str | None = None
    # When a held step must be looked at again though nothing nudged the task (its
    # `wait_timeout`, a limit's next free start), or None.
    held_until: datetime | None = None

    @property
    def awaiting_retry(self) -> bool:
        """Failed, with a further attempt scheduled."""
        return self.status is Status.ERROR and self.next_attempt_at is not None

    @property
    def due_at(self) -> datetime | None:
        """When a waiting step may start (a backoff, wait, reattempt, its items' retries)."""
        if self.status is Status.PENDING or self.status is Status.ERROR or self.awaiting:
            return self.next_attempt_at
        return None


#: Why a due step is held (`StepState.held`): an event not signalled yet, a limit's slot.
HELD_EVENT, HELD_LIMIT = "event", "limit"


class Verdict(str, Enum):
    """What the task should do once the ready steps are dealt with."""

    RUN = "run"  # steps are ready or running (and a retry may be due at `Plan.wake_at`)
    WAIT = "wait"  # only backoffs, waits and reattempts remain: come back at `Plan.wake_at`
    COMPLETE = "complete"  # every step complete, resolved or skipped
    ERROR = "error"  # a step failed for good and nothing else can progress
    # Idle until nudged: nothing runs or falls due, but a step awaits its children or
    # items, or is held (an event not signalled yet); the task is released with no due
    # time, and a message (a finished child, an item's outcome, a signal) wakes it.
    IDLE = "idle"


@dataclass
class Plan:
    """The planner's answer.

    `wake_at`: with WAIT, when the task is due again; with RUN, the earliest time a step
    that is neither ready nor running becomes ready (a retry whose dependencies hold), so
    a pass waiting on running steps wakes for it then; None if there is no such step.
    A held step's `held_until` counts as such a time. `held`: with IDLE, what the held
    steps wait for (sorted, e.g. ["event"]).
    """

    ready: list[str]
    verdict: Verdict
    wake_at: datetime | None = None
    held: list[str] | None = None


def deps_satisfied(step: StepState, steps: Mapping[str, StepState]) -> bool:
    """Every step this one depends on is complete, resolved manually or skipped."""
    return all(steps[d].status in SATISFIED for d in step.depends_on)


def is_ready(step: StepState, steps: Mapping[str, StepState], now: datetime) -> bool:
    """The step may start now: pending or due for retry, with its dependencies satisfied.

    A pending step with a `next_attempt_at` (a wait or a reattempt) waits until then.
    """
    if step.held is not None:
        return False
    if step.status is Status.PENDING or step.awaiting_retry:
        due = step.next_attempt_at
        return (due is None or due <= now) and deps_satisfied(step, steps)
    if step.awaiting:  # its items' retries are due: the item runner goes on
        return step.next_attempt_at is not None and step.next_attempt_at <= now
    return False


def plan(steps: Mapping[str, StepState], now: datetime, running: Collection[str] = ()) -> Plan:
    """Decide what to start now and what the task's state is.

    Args:
        steps: every step of the task, in topological order.
        now: the app's clock.
        running: steps this engine pass is running at the moment.
    """
    ready = [n for n, s in steps.items() if n not in running and is_ready(s, steps, now)]
    held = [s for n, s in steps.items() if s.held is not None and n not in running]
    if ready or running:
        due = [
            d
            for n, s in steps.items()
            if (d := s.due_at) is not None
            and d > now
            and n not in running
            and deps_satisfied(s, steps)
        ]
        due += [d for s in held if (d := s.held_until) is not None]
        return Plan(ready, Verdict.RUN, wake_at=min(due, default=None))
    if all(s.status in SATISFIED for s in steps.values()):
        return Plan([], Verdict.COMPLETE)
    # Only steps that may start at their due time: one whose dependencies cannot be
    # satisfied any more would wake the task for nothing.
    waits = [
        d
        for s in steps.values()
        if s.held is None and (d := s.due_at) is not None and deps_satisfied(s, steps)
    ]
    waits += [d for s in held if (d := s.held_until) is not None]
    if waits:
        return Plan([], Verdict.WAIT, wake_at=min(waits))
    if held or any(s.awaiting for s in steps.values()):
        return Plan([], Verdict.IDLE, held=sorted({s.held for s in held if s.held}))
    return Plan([], Verdict.ERROR)
