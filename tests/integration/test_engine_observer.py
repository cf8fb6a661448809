"""The engine's events reach the app's observers (`Tasker.observe`), on both stores."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from integration_support import task_class

from tasker import Observer, StepTemplate, Tasker, TaskRequest
from tasker.errors import RetryableError


class Recorder(Observer):
    """Every event, with the thread it came on."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []
        self.threads: set[int] = set()  # the threads attempts were reported on
        self._local = threading.local()  # the attempt that started on this thread
        self._lock = threading.Lock()

    def _add(self, *event: object) -> None:
        with self._lock:
            self.events.append(event)

    def on_pass_started(
        self, task_id: int, task: str, due_at: datetime | None, now: datetime, trace: str | None
    ) -> None:
        self._add("pass", task_id, task, due_at is not None and due_at <= now)

    def on_pass_finished(self, task_id: int, task: str, error: BaseException | None) -> None:
        self._add("pass_end", task_id, error)

    def on_attempt_started(self, task_id: int, task: str, step: str, attempt: int) -> None:
        self.threads.add(threading.get_ident())
        self._local.started = step
        self._add("start", step, attempt)

    def on_attempt_finished(
        self,
        task_id: int,
        task: str,
        step: str,
        ok: bool,
        flow: str | None,
        seconds: float,
        error: dict[str, Any] | None,
    ) -> None:
        self.threads.add(threading.get_ident())
        failed = error is not None and error["message"] == "not yet"
        self._add("end", step, ok, flow, seconds >= 0, self._local.started == step, failed)

    def on_lease_lost(self, task_id: int) -> None:
        self._add("lease_lost", task_id)

    def on_messages_sent(self, count: int) -> None:
        self._add("sent", count)


def test_a_pass_reports_its_attempts_failures_and_retries(backend: Tasker, clock) -> None:
    """Given a task whose step b fails once and whose step c asks to be skipped, when it
    runs to the end, then the observer sees each pass (the task was due), each attempt's
    start and end on the step's own thread (b's first as a failure, c's as a flow
    request), every pass's end, and the messages sent."""

    def fail_once(task, sequence, step):
        if step.attempts == 1:
            raise RetryableError("not yet", retry_after=5)
        return {"ok": True}

    def skip(task, sequence, step):
        step.skip("nothing to do")

    steps = [
        StepTemplate(name="a", handler=lambda t, q, s: {}),
        StepTemplate(name="b", handler=fail_once, depends_on=["a"]),
        StepTemplate(name="c", handler=skip, depends_on=["a"]),
    ]
    backend.register(task_class("observed", steps))
    rec = backend.observe(Recorder())

    task = backend.enqueue(TaskRequest(name="observed"))
    backend.run_until_idle()
    clock.advance(6)
    backend.run_until_idle()

    assert backend.get_task(task.task_id).status == "complete"
    ev = rec.events
    assert ev[0] == ("sent", 1)
    passes = [e for e in ev if e[0] == "pass"]
    assert passes == [("pass", task.task_id, "observed", True)] * 2
    assert [e for e in ev if e[0] == "pass_end"] == [("pass_end", task.task_id, None)] * 2
    starts = sorted(e[1:] for e in ev if e[0] == "start")
    assert starts == [("a", 1), ("b", 1), ("b", 2), ("c", 1)]
    # Each ended on the thread it started on (the last flag), not the pass's own.
    ends = sorted(e[1:] for e in ev if e[0] == "end")
    assert ends == [
        ("a", True, None, True, True, False),
        ("b", False, None, True, True, True),
        ("b", True, None, True, True, False),
        ("c", False, "skip", True, True, False),
    ]
    assert threading.get_ident() not in rec.threads


def test_a_pass_whose_lease_is_taken_reports_the_loss(backend: Tasker, clock) -> None:
    """Given a step during which the lease expires and another worker claims the task,
    when the step returns, then its write is refused and the observer sees the lease
    lost, then the end of the pass."""
    thief: list[object] = []

    def slow(task, sequence, step):
        clock.advance(backend.settings.lease_seconds + 1)
        now = backend.now()
        later = now.replace(year=now.year + 1)
        thief.append(backend.store.claim(task.task_id, "thief", now, later))
        return {}

    backend.register(task_class("stolen", [StepTemplate(name="s", handler=slow)]))
    rec = backend.observe(Recorder())
    task = backend.enqueue(TaskRequest(name="stolen"))
    backend.run_until_idle()

    assert thief and thief[0] is not None
    tail = [e for e in rec.events if e[0] in ("lease_lost", "pass_end")]
    assert tail == [("lease_lost", task.task_id), ("pass_end", task.task_id, None)]


def test_each_item_of_a_for_each_step_is_reported_as_an_attempt_of_the_step(
    backend: Tasker, clock
) -> None:
    """Given a for_each step over two items whose first item fails once, when the task runs
    to the end (the retry after the item's backoff), then the observer sees three attempts
    of the step, on the items' threads: item 0 twice (failed, then ok), item 1 once."""
    runs: list[int] = []

    def each(task, sequence, step):
        runs.append(step.item_index)
        if step.item_index == 0 and runs.count(0) == 1:
            raise RuntimeError("not yet")

    backend.register(
        task_class("items", [StepTemplate(name="each", handler=each, for_each=lambda t, s: [1, 2])])
    )
    rec = backend.observe(Recorder())
    task = backend.enqueue(TaskRequest(name="items"))
    backend.run_until_idle()
    clock.advance(600)
    backend.run_until_idle()

    assert backend.get_task(task.task_id).status == "complete"
    starts = sorted(e[1:] for e in rec.events if e[0] == "start")
    assert starts == [("each", 1), ("each", 1), ("each", 2)]
    ends = sorted(e[1:] for e in rec.events if e[0] == "end")
    assert ends == [
        ("each", False, None, True, True, True),
        ("each", True, None, True, True, False),
        ("each", True, None, True, True, False),
    ]
    assert threading.get_ident() not in rec.threads


def test_a_transactional_steps_attempts_are_reported_like_any(backend: Tasker, clock) -> None:
    """Given a transactional step that fails once, when it runs to the end, then the
    observer sees both attempts start and end, on the step's own thread."""

    def once(task, sequence, step):
        step.connection.execute(sa.text("SELECT 1"))
        if step.attempts == 1:
            raise RetryableError("not yet", retry_after=5)

    backend.register(
        task_class("observed_tx", [StepTemplate(name="t", handler=once, transactional=True)])
    )
    rec = backend.observe(Recorder())

    task = backend.enqueue(TaskRequest(name="observed_tx"))
    backend.run_until_idle()
    clock.advance(6)
    backend.run_until_idle()

    assert backend.get_task(task.task_id).status == "complete"
    assert sorted(e[1:] for e in rec.events if e[0] == "start") == [("t", 1), ("t", 2)]
    ends = sorted(e[1:3] for e in rec.events if e[0] == "end")
    assert ends == [("t", False), ("t", True)]
    assert threading.get_ident() not in rec.threads
