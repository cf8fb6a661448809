"""Helpers of the integration tests: handler classes made on the fly, a thread-safe event
log, driving a task to its end, and checking the audit trail against the final state."""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from tasker import Counts, StepTemplate, Tasker, TaskHandler, TaskView, TransitionView
from tasker.core.states import Status, can_step, can_task, is_note
from tasker.testing.clock import FakeClock

FINISHED = ("complete", "error", "cancelled", "resolved_manually")
_names = itertools.count()


def task_class(
    name: str,
    templates: Sequence[StepTemplate],
    *,
    version: str | None = None,
    schema: dict[str, Any] | None = None,
    annotate: Callable[..., None] | None = None,
) -> type[TaskHandler]:
    """A TaskHandler subclass with these steps (a new class on every call)."""
    attrs: dict[str, Any] = {"name": name, "step_templates": list(templates)}
    if version is not None:
        attrs["version"] = version
    if schema is not None:
        attrs["context_schema"] = schema
    if annotate is not None:
        attrs["update_annotations"] = annotate
    return type(f"Task{next(_names)}", (TaskHandler,), attrs)


class EventLog:
    """Records what step handlers do, in the order it happens, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[str, str]] = []

    def add(self, kind: str, step: str) -> None:
        with self._lock:
            self.events.append((kind, step))

    def of(self, kind: str) -> list[str]:
        with self._lock:
            return [s for k, s in self.events if k == kind]

    def recorder(self, results: dict[str, Any] | None = None) -> Callable[..., dict[str, Any]]:
        """A step handler that logs its start and end and returns `results`."""

        def handle(task: Any, sequence: Any, step: Any) -> dict[str, Any]:
            self.add("start", step.name)
            self.add("done", step.name)
            return dict(results or {"ran": step.name})

        return handle

    def assert_dependency_order(self, deps: dict[str, Sequence[str]]) -> None:
        """Every start of a step came after every one of its dependencies finished."""
        with self._lock:
            events = list(self.events)
        done: set[str] = set()
        for kind, step in events:
            if kind == "start":
                missing = [d for d in deps[step] if d not in done]
                assert not missing, f"{step} started before {missing} finished: {events}"
            elif kind == "done":
                done.add(step)


def settle(app: Tasker, clock: FakeClock, task_id: int, rounds: int = 60) -> TaskView:
    """Run the task, moving the clock past every backoff, until it is finished."""
    for _ in range(rounds):
        app.run_until_idle()
        task = app.get_task(task_id)
        if task.status in FINISHED:
            return task
        clock.advance(app.settings.backoff_max + 1)
    raise AssertionError(f"task {task_id} did not finish in {rounds} rounds: {task}")


def check_history(app: Tasker, task_id: int) -> dict[str | None, list[TransitionView]]:
    """Check the audit trail is a chain of allowed changes ending in the current state.

    Returns the transitions grouped by step name (None: the task itself).
    """
    task = app.get_task(task_id)
    chains: dict[str | None, list[TransitionView]] = defaultdict(list)
    for t in app.history(task_id):
        assert_utc(t.created_at)
        chains[t.step].append(t)
    assert set(chains) == {None, *task.steps}, "every step and the task have a history"
    for name, chain in chains.items():
        assert chain[0].from_status is None, f"{name}: the first change is its creation"
        for before, after in itertools.pairwise(chain):
            assert after.from_status == before.to_status, f"{name}: broken chain {chain}"
        allowed = can_task if name is None else can_step
        for t in chain:
            frm = None if t.from_status is None else Status(t.from_status)
            to = Status(t.to_status)
            assert allowed(frm, to) or is_note(frm, to), f"{name}: forbidden change {t}"
    assert chains[None][-1].to_status == task.status
    for name, step in task.steps.items():
        chain = chains[name]
        assert chain[-1].to_status == step.status, f"{name}: history ends elsewhere"
        limit = step.retry_limit if step.retryable else 1
        assert all(t.attempt is not None and 0 <= t.attempt <= limit for t in chain), chain
        started = [t for t in chain if t.to_status == "in_progress"]
        # Attempts are numbered 1, 2, ... (a retry() with a fresh budget starts again at 1).
        numbers = [t.attempt for t in started]
        restarts = [i for i, n in enumerate(numbers) if n == 1]
        assert restarts[:1] in ([], [0]), numbers
        for n, m in itertools.pairwise(numbers):
            assert m in (n + 1, 1), numbers
        if numbers and step.status != "pending":
            assert numbers[-1] == step.attempts, (name, numbers, step.attempts)
    return chains


def assert_utc(value: datetime | None) -> None:
    """A timezone-aware UTC datetime (or None)."""
    if value is None:
        return
    assert isinstance(value, datetime)
    assert value.tzinfo is not None, f"naive datetime {value!r}"
    assert value.utcoffset() == timedelta(0), f"not UTC: {value!r}"


def messages_sent(app: Tasker) -> int:
    """How many task messages `app` sent since this was first asked (a `Counts` observer)."""
    if app not in _counts:
        _counts[app] = app.observe(Counts())
    return _counts[app].messages


_counts: weakref.WeakKeyDictionary[Tasker, Counts] = weakref.WeakKeyDictionary()
