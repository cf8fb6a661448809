"""The item runner of a `for_each` step: the step's "attempt", which runs its items.

The engine starts it in the step's thread like any attempt (so the pass renews the
lease while it runs, and a lost worker's step is recovered as usual). It evaluates
`for_each` once, when the step first starts, and stores the list; afterwards it reads
the stored items back. It then runs the handler once per item, at most `concurrency` at
once, each attempt under the step's `timeout`, and records outcomes in fenced batches
(`tasker.store.items.write`): each write holds every outcome that arrived since the
last one and the attempts it starts. It ends, handing its outcome to the pass, when
nothing runs and nothing is due now: complete (`{"items": [...]}` assembled once from
the rows, in order), failed for good (an item has no attempt left), or waiting for
the items' backoff (the step awaits "items" until then, holding no thread).

Per-item state is decided by `tasker.core.items`; a run in which the lease is lost
starts nothing more and waits for its running items before it returns.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tasker.core import flow, items
from tasker.core.clock import as_utc
from tasker.core.flow import FlowRequest
from tasker.core.jsonvalue import json_problem
from tasker.core.views import StepView
from tasker.definition.template import StepTemplate
from tasker.engine.observer import Observer
from tasker.engine.outcome import Outcome, describe
from tasker.engine.runtime import HandlerStep, HandlerTask, StepSequence
from tasker.engine.threads import ElasticThreads
from tasker.errors import (
    InvalidResultError,
    ItemError,
    LeaseLostError,
    PermanentError,
    RetryableError,
    StepTimeoutError,
)
from tasker.settings import Settings
from tasker.store import items as stored
from tasker.store.db import Database
from tasker.store.lease import Lease

log = logging.getLogger("tasker.engine")
#: How long the runner waits for more outcomes once one arrived, before it writes them.
GATHER_SECONDS = 0.002


@dataclass
class _Ended:
    """How one item attempt ended."""

    index: int
    token: object
    ok: bool
    results: Any = None
    error: dict[str, Any] | None = None
    retry_after: float | None = None
    permanent: bool = False
    # A flow request of the item's handler (`tasker.core.flow`): not a failed attempt.
    flow: str | None = None
    wait: float | None = None
    reason: str = ""
    annotations: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class ItemRunner:
    """Runs `for_each` steps' items for one engine (thread-safe: one call per step run)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Callable[[], datetime],
        observer: Observer | None = None,
    ) -> None:
        self._db = db
        self.observer = observer or Observer()  # each item attempt is a step attempt
        self._settings = settings
        self._clock = clock
        self._threads = ElasticThreads("tasker-item")

    def run(
        self,
        tpl: StepTemplate,
        row: Mapping[str, Any],
        sequence: StepSequence,
        view: StepView,
        inputs: Any,
        lease: Lease,
        token: object,
        deliver: Callable[[Outcome], None],
    ) -> None:
        """Run the step's items and deliver the step's outcome; never raises."""
        try:
            outcome = _Run(self, tpl, row, sequence, view, inputs, lease, token).drive()
        except BaseException as exc:
            log.exception("task %s: for_each step %r failed", lease.task_id, view.name)
            outcome = Outcome(view.name, token, ok=False, error=describe(exc))
        deliver(outcome)

    def now(self) -> datetime:
        """The app's clock, aware UTC."""
        return as_utc(self._clock())


class _Run:
    """One run of a `for_each` step's items."""

    def __init__(
        self,
        runner: ItemRunner,
        tpl: StepTemplate,
        row: Mapping[str, Any],
        sequence: StepSequence,
        view: StepView,
        inputs: Any,
        lease: Lease,
        token: object,
    ) -> None:
        s = runner._settings
        self.r, self.tpl, self.row, self.sequence = runner, tpl, row, sequence
        self.view, self.inputs, self.lease, self.token = view, inputs, lease, token
        self.db = runner._db
        self.rules = items.Rules(view.retry_limit, view.retryable, s.backoff_base, s.backoff_max)
        self.limit = tpl.timeout or s.step_timeout
        self.concurrency = tpl.concurrency or s.max_concurrent_steps
        self.ended: queue.SimpleQueue[_Ended] = queue.SimpleQueue()
        self.running: dict[int, tuple[object, float]] = {}  # index -> (token, deadline)
        self.abandoned: dict[int, object] = {}  # past their time limit, thread still alive
        self._freed: list[int] = []  # abandoned items whose thread ended at last
        # An item's handler asked to pause or cancel the task: start no more items.
        self.asked: tuple[str, str] | None = None
        self.annotations: list[tuple[str, dict[str, Any]]] = []  # the items' annotations

    def _outcome(self, **kw: Any) -> Outcome:
        return Outcome(self.view.name, self.token, annotations=self.annotations, **kw)

    def drive(self) -> Outcome:
        step_id = self.view.workflow_step_id
        states = stored.load(self.db, step_id)
        if not states:
            first = self._first(step_id)
            if isinstance(first, Outcome):
                return first
            states = first
        now = self.r.now()
        changed = {i.index: i for i in items.lost(states.values(), self.rules, now)}
        states.update(changed)
        agenda = items.Agenda(states.values())
        done: dict[int, Any] = {}
        stopped: BaseException | None = None
        while True:
            now = self.r.now()
            busy = len(self.running) + len(self.abandoned)
            halted = stopped is not None or self.asked is not None
            room = 0 if halted else max(self.concurrency - busy, 0)
            starting = agenda.take(now, room)
            for i in starting:
                states[i] = changed[i] = items.start(states[i])
            values: dict[int, Any] = {}
            if changed or done:
                try:
                    values = stored.write(
                        self.db, self.lease, step_id, (self.view.name, self.view.attempts),
                        changed.values(), done,
                        starting, now,
                    )  # fmt: skip
                except BaseException as exc:  # start nothing more; let running items end
                    stopped, starting = exc, []
                changed, done = {}, {}
            for i in starting:
                self._start(i, values.get(i), states[i].attempts)
            if not self.running and not self.abandoned:
                break
            for e, timed_out in self._wait(agenda.next_due()):
                new = self._ended(states[e.index], e)
                states[e.index] = changed[e.index] = new
                if e.ok or e.flow == flow.SKIP:
                    done[e.index] = e.results
                if not timed_out:  # else scheduled again once its thread ends (`_freed`)
                    agenda.put(new)
            for i in self._freed:
                agenda.put(states[i])
        if stopped is not None:
            if isinstance(stopped, LeaseLostError):
                return self._outcome(ok=False, error=describe(stopped))
            raise stopped
        if self.asked is not None:  # an item paused or cancelled the task
            kind, reason = self.asked
            return self._outcome(ok=False, flow=kind, reason=reason)
        return self._end(items.verdict(states), step_id)

    def _ended(self, item: items.Item, e: _Ended) -> items.Item:
        """The item after its attempt ended; a pause or cancel it asked for is kept.

        Its annotations go with the step's outcome (`Outcome.annotations`).
        """
        self.annotations.extend(e.annotations)
        if e.flow is None:
            return items.record(
                item, e.ok, e.error, e.retry_after, e.permanent, self.rules, self.r.now()
            )
        if e.flow in (flow.PAUSE, flow.CANCEL) and (
            self.asked is None or (e.flow == flow.CANCEL and self.asked[0] != flow.CANCEL)
        ):
            why = e.reason or f"item {e.index} asked to {e.flow} the task"
            self.asked = (e.flow, why)
        return items.requested(item, e.flow, e.wait, self.r.now())

    def _first(self, step_id: int) -> dict[int, items.Item] | Outcome:
        """Evaluate `for_each` (the step's first start) and store the list."""
        assert self.tpl.for_each is not None
        task = HandlerTask(self.row)
        listed = self.tpl.for_each(task, self.sequence)
        problem = items.check_list(listed)
        if problem is not None:
            err = ItemError(f"step {self.view.name!r}: {problem}")
            return self._outcome(ok=False, error=describe(err), permanent=True)
        if not listed:
            return self._outcome(ok=True, results={"items": []})
        return stored.insert(self.db, self.lease, step_id, listed, self.r.now())

    def _start(self, index: int, value: Any, attempt: int) -> None:
        token = object()
        self.running[index] = (token, time.monotonic() + self.limit)
        self.r._threads.submit(self._call, index, value, attempt, token)

    def _call(self, index: int, value: Any, attempt: int, token: object) -> None:
        """Run the handler for one item (`step.attempts`: the item's attempt); never raises.

        It is reported to the observers as an attempt of the step.
        """
        observer, task_id, name = self.r.observer, self.lease.task_id, str(self.row.get("name"))
        observer.on_attempt_started(task_id, name, self.view.name, attempt)
        began = time.perf_counter()
        task = HandlerTask(self.row)
        step = HandlerStep(self.view, self.inputs)
        step.item, step.item_index, step.attempts = value, index, attempt
        task._in_run = step._in_run = True
        try:
            returned = self.tpl.call(task, self.sequence, step)
            results = step.results if returned is None else returned
            if results is not None and not isinstance(results, dict):
                raise InvalidResultError(
                    f"item {index} returned a {type(results).__name__}; return a dict or None"
                )
            problem = json_problem(results)
            if problem:
                raise InvalidResultError(f"item {index} results cannot be stored: {problem}")
            ended = _Ended(index, token, True, results)
        except FlowRequest as req:
            ended = _Ended(index, token, False, flow=req.kind, wait=req.wait, reason=req.reason)
        except BaseException as exc:
            retry_after = exc.retry_after if isinstance(exc, RetryableError) else None
            ended = _Ended(
                index, token, False, error=describe(exc), retry_after=retry_after,
                permanent=isinstance(exc, PermanentError),
            )  # fmt: skip
        finally:
            task._in_run = step._in_run = False
        ended.annotations = task.take_annotations()
        seconds = time.perf_counter() - began
        observer.on_attempt_finished(
            task_id, name, self.view.name, ended.ok, None, seconds, ended.error
        )
        self.ended.put(ended)

    def _wait(self, next_due: datetime | None) -> list[tuple[_Ended, bool]]:
        """Wait for item outcomes (or a time limit, or a retry falling due); take them all.

        Returns:
            Each outcome, and whether it is a time-out recorded here (its thread runs on).
        """
        self._freed = []
        clock = time.monotonic()
        deadlines = [d for _, d in self.running.values()]
        timeout = max(0.0, min(deadlines, default=clock + 1.0) - clock)
        if next_due is not None:
            timeout = min(timeout, max(0.0, (next_due - self.r.now()).total_seconds()))
        arrived = []
        try:
            arrived.append(self.ended.get(timeout=min(timeout, 1.0)))
            # Gather a batch: the others running may end within the window (a write costs
            # a commit, so fewer and fuller batches are cheaper than one per outcome).
            window = time.monotonic() + GATHER_SECONDS
            while len(arrived) < len(self.running) + len(self.abandoned):
                left = window - time.monotonic()
                arrived.append(
                    self.ended.get(timeout=left) if left > 0 else self.ended.get_nowait()
                )
        except queue.Empty:
            pass
        out: list[tuple[_Ended, bool]] = []
        for e in arrived:
            if self.abandoned.get(e.index) is e.token:  # too late to count: free it again
                del self.abandoned[e.index]
                self._freed.append(e.index)
                continue
            held = self.running.get(e.index)
            if held is None or held[0] is not e.token:
                continue
            del self.running[e.index]
            out.append((e, False))
        clock = time.monotonic()
        for i, (tok, deadline) in list(self.running.items()):
            if deadline <= clock:
                del self.running[i]
                self.abandoned[i] = tok
                err = StepTimeoutError(f"item {i} ran past its time limit of {self.limit:g} s")
                out.append((_Ended(i, tok, False, error=describe(err)), True))
        return out

    def _end(self, v: items.Verdict, step_id: int) -> Outcome:
        if v.kind == "complete":
            return self._outcome(ok=True, results={"items": stored.results(self.db, step_id)})
        if v.kind == "failed":
            return self._outcome(ok=False, error=v.error, permanent=True)
        assert v.wake_at is not None
        wait = max(0.0, (v.wake_at - self.r.now()).total_seconds())
        return self._outcome(
            ok=False, flow=items.AWAIT, wait=wait, reason="items wait for their retries"
        )
