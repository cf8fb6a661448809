"""Launching: after a commit, send what it scheduled and start the steps' attempts on threads."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from functools import partial

from tasker.core.views import StepView
from tasker.engine.gathering import Gatherer
from tasker.engine.items import ItemRunner
from tasker.engine.observer import Observers
from tasker.engine.outcome import Outcome, describe, observed, run_handler
from tasker.engine.pass_state import Pass, Running
from tasker.engine.runtime import HandlerStep, HandlerTask, json_copy
from tasker.engine.spawning import Spawner
from tasker.engine.threads import ElasticThreads
from tasker.engine.transactional import StepTransactions
from tasker.errors import ConfigurationError
from tasker.store.steps import inputs_of

#: Called after a commit that scheduled the task: (task_id, deliver_at).
Notify = Callable[[int, datetime], None]


class Launcher:
    """Starts the attempts of a pass (thread-safe: no state of its own)."""

    def __init__(
        self,
        notify: Notify,
        txn: StepTransactions,
        threads: ElasticThreads,
        spawner: Spawner,
        items: ItemRunner,
        observer: Observers,
        gather: Gatherer,
        now: Callable[[], datetime],
    ) -> None:
        self._notify = notify
        self._txn = txn
        self._threads = threads
        self._spawner = spawner
        self._items = items
        self._observer = observer
        self._gather = gather
        self._now = now

    def launch(self, p: Pass, started: list[StepView]) -> None:
        """After the commit: send what it scheduled, then start the steps' threads."""
        if p.notify_at is not None:
            at, p.notify_at = p.notify_at, None
            self._notify(p.lease.task_id, at)
        if p.sends:  # spawned children, and a parent this task's end wakes
            sends, p.sends, now = p.sends, [], self._now()
            for task_id in sends:
                self._notify(task_id, now)
        turn = p.txn.take_turn(p.running)
        if turn is not None:  # SQLite: a transactional step deferred until now
            name, args = turn
            p.running[name].deadline = time.monotonic() + self._gather.time_limit(p, name)
            p.running[name].held = self._txn.start(self._threads.submit, *args)
        if not started:
            return
        sequence = p.sequence()
        context = p.row["context"]
        p.launches += 1
        # Observed attempts report on their own thread (`observed`); none: no wrapper.
        run = partial(observed, self._observer, p.reg.name) if self._attempts_seen() else None
        for view in started:
            token = object()
            p.running[view.name] = Running(
                token,
                time.monotonic() + self._gather.time_limit(p, view.name),
                launch=p.launches,
            )
            tpl = p.reg.steps.get(view.name)
            if tpl is None:  # the registration changed since the task was created
                p.outcomes.put(no_handler(p, view.name, token))
                continue
            # HandlerStep copies the inputs (by default the task's context) on first read.
            hstep = HandlerStep(view, inputs_of(view, context))
            event = p.started_events.get(view.name)
            if event is not None:
                hstep.event = json_copy(event.payload)
            hstep._spawner, hstep._task_id = self._spawner, p.lease.task_id
            if tpl.for_each is not None:  # the item runner is the step's attempt
                items = (p.row, sequence, view, hstep.inputs, p.lease, token, p.outcomes.put)
                self._threads.submit(self._items.run, tpl, *items)
                continue
            args = (
                tpl,
                HandlerTask(p.row),
                sequence,
                hstep,
                token,
                p.outcomes.put,
                getattr(p.reg.handler, "cancel_if", None),
            )
            attempt = partial(run, p.lease.task_id, view.attempts) if run else run_handler
            if not tpl.transactional:
                self._threads.submit(attempt, *args)
            elif self._txn.exclusive and p.txn.in_flight(p.running, view.name):
                # SQLite: one transaction (write lock) at a time
                p.txn.defer(view.name, p.running[view.name], (attempt, *args))
            else:
                p.running[view.name].held = self._txn.start(self._threads.submit, attempt, *args)

    def _attempts_seen(self) -> bool:
        obs = self._observer
        return obs.wants("on_attempt_started") or obs.wants("on_attempt_finished")


def no_handler(p: Pass, name: str, token: object) -> Outcome:
    """The outcome of a step that this worker's registration of the task does not have.

    The task runs the DAG it was created with; a step since renamed or removed from
    its registration fails at once, for good (a person registers it again and retries).
    """
    reg = p.reg
    error = ConfigurationError(
        f"task {reg.name!r} version {reg.version!r} as registered here has no step {name!r} "
        f"(it has: {list(reg.steps)}); the task runs the steps it was created with: register "
        "the step again (give a changed DAG a new version) and retry the task"
    )
    return Outcome(name, token, ok=False, error=describe(error), permanent=True)
