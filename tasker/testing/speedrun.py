"""`speedrun`: drive one task through its waits, backoffs and reattempts on a FakeClock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasker.core.states import TASK_FINAL, TASK_HALTED
from tasker.core.views import TaskView
from tasker.errors import SpeedrunError, TaskerError
from tasker.testing.clock import FakeClock

if TYPE_CHECKING:
    from tasker.app import Tasker

_STOPPED = frozenset(s.value for s in (*TASK_FINAL, *TASK_HALTED))


def _runs(app: Tasker, task_id: int) -> int:
    """How many times a step of the task has started (its history's `started` rows)."""
    return sum(
        1 for h in app.history(task_id) if h.step is not None and h.to_status == "in_progress"
    )


def speedrun(app: Tasker, task_id: int, max_steps: int | None = None) -> TaskView:
    """Run a task, moving the app's FakeClock to each due time, until it stops.

    It stops once the task has ended (complete, error, cancelled, resolved) or waits for
    something the clock cannot bring (a person: paused; an event), and returns its view.

    Args:
        app: an app whose clock is a `FakeClock`.
        task_id: the task.
        max_steps: the most step runs allowed (default: 10 times the number of steps).

    Raises:
        TaskerError: the app's clock is not a `FakeClock`.
        SpeedrunError: more than `max_steps` step runs happened.
    """
    clock = getattr(app, "_clock", None)
    if not isinstance(clock, FakeClock):
        raise TaskerError("speedrun needs an app whose clock is a tasker.testing.FakeClock")
    view = app.get_task(task_id)
    limit = max_steps if max_steps is not None else 10 * max(len(view.steps), 1)
    while True:
        app.run_until_idle()
        view = app.get_task(task_id)
        runs = _runs(app, task_id)
        if runs > limit:
            raise SpeedrunError(
                f"task {task_id} ran {runs} steps, more than max_steps={limit}; it is {view.status}"
            )
        due = view.next_run_at
        if view.status in _STOPPED or due is None:
            return view
        now = app.now()
        if due <= now:
            return view  # due, yet run_until_idle ran nothing: no handler here, say
        clock.advance((due - now).total_seconds())
