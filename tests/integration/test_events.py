"""Events on both stores: `wait_for`, `app.signal`, early events, consumption, timeouts."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from integration_support import task_class

from tasker import StepTemplate, TaskRequest
from tasker.errors import InvalidRequestError, InvalidStateError, PermanentError
from tasker.store import schema as m


def events_of(app, task_id) -> list[tuple[str, object, int | None]]:
    """(name, payload, consumed_by) of the task's stored events, in signal order."""
    with app.db.read() as conn:
        rows = conn.execute(
            sa.select(m.events.c.name, m.events.c.payload, m.events.c.consumed_by)
            .where(m.events.c.task_id == task_id)
            .order_by(m.events.c.event_id)
        ).all()
    return [tuple(r) for r in rows]


def taker(seen):
    def take(task, sequence, step):
        seen.append((step.name, step.event))
        return {"got": step.event}

    return take


def test_early_events_are_kept_and_consumed_in_order_by_the_steps_in_topological_order(
    backend, clock
):
    """Given two steps waiting for "go" after a step that waits an hour, when two events
    are signalled before either waits, then nothing runs early; once the wait passes the
    first step in topological order takes the first event and the second the second, each
    event consumed by exactly one step, in the same write that starts it."""
    seen: list = []
    backend.register(
        task_class(
            "early",
            [
                StepTemplate(name="first", handler=taker(seen), wait=3600),
                StepTemplate(name="b1", handler=taker(seen), depends_on=["first"], wait_for="go"),
                StepTemplate(name="b2", handler=taker(seen), depends_on=["first"], wait_for="go"),
            ],
        )
    )
    t = backend.enqueue(TaskRequest(name="early")).task_id
    backend.run_until_idle()
    backend.signal(t, "go", {"n": 1})
    backend.signal(t, "go", {"n": 2})
    backend.run_until_idle()
    assert seen == []
    assert [e[2] for e in events_of(backend, t)] == [None, None]
    view = backend.get_task(t)
    assert view.steps["b1"].waiting_for == "dependencies"
    clock.advance(3601)
    backend.run_until_idle()
    task = backend.get_task(t)
    assert task.status == "complete"
    # b1 and b2 run side by side, so `seen` holds them in either order; who took which
    # event is what the order decides.
    assert sorted(seen[1:], key=lambda s: s[0]) == [("b1", {"n": 1}), ("b2", {"n": 2})]
    ids = {n: task.steps[n].workflow_step_id for n in ("b1", "b2")}
    assert events_of(backend, t) == [("go", {"n": 1}, ids["b1"]), ("go", {"n": 2}, ids["b2"])]
    started = [
        h.reason for h in backend.history(t) if h.step == "b1" and h.to_status == "in_progress"
    ]
    assert started and "consumed event 'go'" in started[0]


def test_a_signal_while_the_pass_runs_is_taken_by_its_next_write(backend):
    """Given a task with a running step and an independent step waiting for "go", when
    the running step's handler signals "go", then the pass reads the events again before
    its next write and starts the waiting step in the same pass: the task completes."""
    seen: list = []

    def signals(task, sequence, step):
        backend.signal(task.task_id, "go", "now")
        return {"signalled": True}

    backend.register(
        task_class(
            "inflight",
            [
                StepTemplate(name="sender", handler=signals),
                StepTemplate(name="waiter", handler=taker(seen), wait_for="go"),
            ],
        )
    )
    t = backend.enqueue(TaskRequest(name="inflight")).task_id
    backend.run_until_idle()
    task = backend.get_task(t)
    assert task.status == "complete"
    assert seen == [("waiter", "now")]
    assert task.steps["waiter"].results == {"got": "now"}


def test_a_task_in_error_keeps_its_event_for_the_retry_and_the_payload_is_seen_on_retries(
    backend, clock
):
    """Given an event step behind a step that fails for good, when "go" is signalled to the
    task in error, then it is stored and the task stays in error; after `retry` the step
    runs with it, and its own retry (after a failed attempt) sees the same payload."""
    seen: list = []
    fail = {"first": True}

    def gate(task, sequence, step):
        if fail["first"]:
            raise PermanentError("closed")
        return {}

    def flaky(task, sequence, step):
        seen.append((step.attempts, step.event))
        if step.attempts == 1:
            raise RuntimeError("once")
        return {"payload": step.event}

    backend.register(
        task_class(
            "kept",
            [
                StepTemplate(name="gate", handler=gate),
                StepTemplate(name="ev", handler=flaky, depends_on=["gate"], wait_for="go"),
            ],
        )
    )
    t = backend.enqueue(TaskRequest(name="kept")).task_id
    backend.run_until_idle()
    assert backend.get_task(t).status == "error"
    backend.signal(t, "go", [1, 2])
    assert backend.get_task(t).status == "error"
    assert events_of(backend, t) == [("go", [1, 2], None)]
    fail["first"] = False
    backend.retry(t)
    backend.run_until_idle()
    clock.advance(600)
    backend.run_until_idle()
    task = backend.get_task(t)
    assert task.status == "complete"
    assert seen == [(1, [1, 2]), (2, [1, 2])]
    assert task.steps["ev"].results == {"payload": [1, 2]}


def test_refused_signals_store_nothing(backend):
    """Given a task waiting for "go", when signals name no waited event, carry a payload
    that is not JSON, or reach a cancelled task, then each raises and no event is stored."""
    backend.register(task_class("refused", [StepTemplate(name="ev", wait_for="go")]))
    t = backend.enqueue(TaskRequest(name="refused")).task_id
    backend.run_until_idle()
    with pytest.raises(InvalidRequestError, match="'go'"):
        backend.signal(t, "stop")
    with pytest.raises(InvalidRequestError, match="cannot be stored"):
        backend.signal(t, "go", {"when": object()})
    with pytest.raises(InvalidRequestError):
        backend.signal(t, "", {})
    backend.cancel(t)
    with pytest.raises(InvalidStateError):
        backend.signal(t, "go")
    assert events_of(backend, t) == []


def test_wait_timeout_with_on_failure_skip_lets_the_dependents_go_on(backend, clock):
    """Given an event step with wait_timeout=1 h and on_failure="skip", when no event comes
    for an hour, then it is skipped with its WaitTimeoutError kept, using no attempt, and
    its dependent runs; the task completes."""
    seen: list = []
    backend.register(
        task_class(
            "optional_approval",
            [
                StepTemplate(
                    name="approval", handler=taker(seen), wait_for="ok",
                    wait_timeout=timedelta(hours=1), on_failure="skip",
                ),
                StepTemplate(name="after", handler=taker(seen), depends_on=["approval"]),
            ],
        )
    )  # fmt: skip
    t = backend.enqueue(TaskRequest(name="optional_approval")).task_id
    backend.run_until_idle()
    clock.advance(3601)
    backend.run_until_idle()
    task = backend.get_task(t)
    assert task.status == "complete"
    step = task.steps["approval"]
    assert (step.status, step.attempts) == ("skipped", 0)
    assert step.error["error_class"].endswith("WaitTimeoutError")
    assert seen == [("after", None)]


def test_retention_purges_a_tasks_events_with_it(backend, clock):
    """Given a complete task that consumed an event, when it is purged, then its events
    go with it."""
    backend.register(task_class("purged", [StepTemplate(name="ev", wait_for="go")]))
    t = backend.enqueue(TaskRequest(name="purged")).task_id
    backend.run_until_idle()
    backend.signal(t, "go", {"x": 1})
    backend.run_until_idle()
    assert backend.get_task(t).status == "complete"
    assert len(events_of(backend, t)) == 1
    clock.advance(86400)
    assert backend.purge(older_than=3600) == 1
    assert events_of(backend, t) == []
