"""Events, decided once: which waiting step consumes which signalled event.

No I/O here: the engine reads a task's events (`tasker_events`), `writes.decide` offers
each unconsumed one to the first step in topological order that waits for its name,
and the write that starts that step records it as consumed by it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from tasker.core.states import SATISFIED, Status
from tasker.core.views import StepView

_SATISFIED = frozenset(s.value for s in SATISFIED)


@dataclass(frozen=True)
class Event:
    """One event signalled to a task.

    Attributes:
        event_id: its id (events are consumed in id order).
        name: its name (a step's `wait_for`).
        payload: any JSON value (None when signalled without one).
        consumed_by: the `workflow_step_id` of the step that consumed it, or None.
    """

    event_id: int
    name: str
    payload: object = None
    consumed_by: int | None = None


@dataclass
class Assignment:
    """Which `wait_for` steps have their event, are offered one, or wait for one.

    Attributes:
        holding: step name -> the event it consumed earlier (its retries see it again).
        offered: step name -> the event it consumes if it starts now.
        waiting: steps whose dependencies are satisfied but no event of their name is
            there: held (`planner.HELD_EVENT`) until a signal nudges the task.
    """

    holding: dict[str, Event] = field(default_factory=dict)
    offered: dict[str, Event] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)

    def event_of(self, name: str) -> Event | None:
        """The event step `name` runs with (held or offered), if any."""
        return self.holding.get(name) or self.offered.get(name)


def assign(steps: Mapping[str, StepView], events: Iterable[Event], now: datetime) -> Assignment:
    """Offer each unconsumed event to the first step in topological order waiting for it.

    A step waits for its event once it is pending, its dependencies are satisfied and
    any wait (`next_attempt_at`) has passed; events of one name go in signal order.

    Args:
        steps: every step of the task, in topological order.
        events: the task's events (consumed ones say by which step).
        now: the app's clock.
    """
    out = Assignment()
    by_step = {e.consumed_by: e for e in events if e.consumed_by is not None}
    free: dict[str, list[Event]] = {}
    for e in sorted(events, key=lambda e: e.event_id):
        if e.consumed_by is None:
            free.setdefault(e.name, []).append(e)
    for name, v in steps.items():
        if v.wait_for is None:
            continue
        mine = by_step.get(v.workflow_step_id)
        if mine is not None:
            out.holding[name] = mine
            continue
        if v.status != Status.PENDING.value:
            continue
        if not all(steps[d].status in _SATISFIED for d in v.depends_on):
            continue
        if v.next_attempt_at is not None and v.next_attempt_at > now:
            continue
        queue = free.get(v.wait_for)
        if queue:
            out.offered[name] = queue.pop(0)
        else:
            out.waiting.append(name)
    return out
