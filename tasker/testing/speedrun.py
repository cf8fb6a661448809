"""`speedrun`: drive one task through its waits, backoffs and reattempts on a FakeClock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasker.core.states import AWAIT_CHILDREN, AWAIT_ITEMS, TASK_FINAL, TASK_HALTED, TASK_LIVE
from tasker.core.views import TaskView
from tasker.errors import SpeedrunError, TaskerError
from tasker.testing.clock import FakeClock

if TYPE_CHECKING:
    from tasker.app import Tasker

_STOPPED = frozenset(s.value for s in (*TASK_FINAL, *TASK_HALTED))
_LIVE = frozenset(s.value for s in TASK_LIVE)
#: The `waiting_for` of a step that the clock alone brings further: a wait, a backoff or a
#: reattempt ("time"), or its dependent system's limit (a `per_second` window passes; a
#: `concurrency` slot frees once the step holding it has run).
_TIMED = frozenset({"time", "limit"})


def _runs(app: Tasker, task_id: int) -> int:
    """How many times a step of the task has started (its history's `started` rows)."""
    return sum(
        1 for h in app.history(task_id) if h.step is not None and h.to_status == "in_progress"
    )


def _family(app: Tasker, view: TaskView) -> list[TaskView]:
    """The task and the live sub-tasks it waits for, theirs too (the task first).

    A live task with a step waiting for "children" brings in its live children: what
    moves them moves it.
    """
    family, todo = [], [view]
    while todo:
        v = todo.pop()
        family.append(v)
        if v.status in _LIVE and any(s.waiting_for == AWAIT_CHILDREN for s in v.steps.values()):
            children = (app.get_task(c) for c in v.children)
            todo.extend(c for c in children if c.status in _LIVE)
    return family


def _moves_with_time(view: TaskView) -> bool:
    """Whether moving the clock alone brings a step of this live task further.

    A step waiting for time or a limit does, and one whose `for_each` items wait for
    their backoff ("items" with a `next_attempt_at`). A step waiting for an event does
    not (its `wait_timeout`, like the task's `TaskHandler.timeout`, is a deadline, not
    progress), nor one waiting for "dependencies" (its dependencies say), nor for
    "children" (the sub-tasks say: see `_family`).
    """
    return any(
        s.waiting_for in _TIMED or (s.waiting_for == AWAIT_ITEMS and s.next_attempt_at is not None)
        for s in view.steps.values()
    )


def speedrun(app: Tasker, task_id: int, max_steps: int | None = None) -> TaskView:
    """Run a task, moving the app's FakeClock to each due time, until it stops.

    Each round runs what is due (`run_until_idle`), then looks at the task and the live
    sub-tasks it waits for (a step waiting for "children"), theirs too. It returns the
    task's view once the task has ended (complete, error, cancelled, resolved) or is
    paused, or once none of them has a step that time alone brings further: every live
    step waits for an event, for a step that does, or for sub-tasks that do (a
    `wait_timeout` or a `TaskHandler.timeout` is not waited out: signal the event, then
    call speedrun again). Otherwise it moves the clock to the earliest due time among
    them (a deadline too, if it comes first: such a task then times out as it would in
    real time) and goes on. So a step waiting for an event stops it only when nothing
    else of the task still waits for time.

    Args:
        app: an app whose clock is a `FakeClock`.
        task_id: the task.
        max_steps: the most step runs allowed, of the task and of each sub-task it waits
            for (default: 10 times the number of that task's steps).

    Raises:
        TaskerError: the app's clock is not a `FakeClock`.
        SpeedrunError: a task ran more than its `max_steps` step runs.
    """
    clock = getattr(app, "_clock", None)
    if not isinstance(clock, FakeClock):
        raise TaskerError("speedrun needs an app whose clock is a tasker.testing.FakeClock")
    while True:
        app.run_until_idle()
        view = app.get_task(task_id)
        family = _family(app, view)
        for v in family:
            limit = max_steps if max_steps is not None else 10 * max(len(v.steps), 1)
            runs = _runs(app, v.task_id)
            if runs > limit:
                of = "" if v.task_id == task_id else f" (a sub-task task {task_id} waits for)"
                raise SpeedrunError(
                    f"task {v.task_id}{of} ran {runs} steps, more than max_steps={limit}; "
                    f"it is {v.status}"
                )
        if view.status in _STOPPED or not any(_moves_with_time(v) for v in family):
            return view
        due = min((v.next_run_at for v in family if v.next_run_at is not None), default=None)
        now = app.now()
        if due is None or due <= now:
            return view  # nothing due, or due yet run_until_idle ran nothing: no handler, say
        clock.advance((due - now).total_seconds())
