"""Collections (`for_each`) on SQLite and PostgreSQL: items stored once, run at most
`concurrency` at once, each with its own attempts, resumed alone by `retry`."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from integration_support import task_class

from tasker import StepTemplate, TaskRequest
from tasker.errors import ConfigurationError, PermanentError
from tasker.store import schema as m


def test_items_run_at_most_concurrency_at_once_and_results_come_in_order(backend):
    """Given 40 items with concurrency 3, When run, Then no more than 3 ran at once,
    each ran once, and the results are in item order; `for_each` was called once."""
    lock, state = threading.Lock(), {"now": 0, "peak": 0, "calls": 0}
    seen: list[int] = []
    gate = threading.Event()

    def each(task, sequence, step):  # type: ignore[no-untyped-def]
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            seen.append(step.item_index)
        gate.wait(0.002)  # let siblings overlap
        with lock:
            state["now"] -= 1
        return {"double": step.item * 2}

    def listing(task, sequence):  # type: ignore[no-untyped-def]
        state["calls"] += 1
        return list(range(40))

    backend.register(
        task_class(
            "fan",
            [StepTemplate(name="each", handler=each, for_each=listing, concurrency=3)],
        )
    )
    t = backend.enqueue(TaskRequest(name="fan"))
    backend.run_until_idle()
    step = backend.get_task(t.task_id).steps["each"]
    assert step.status == "complete"
    assert step.results == {"items": [{"double": 2 * i} for i in range(40)]}
    assert step.items == {"total": 40, "complete": 40, "error": 0, "pending": 0}
    assert sorted(seen) == list(range(40))
    assert 1 <= state["peak"] <= 3
    assert state["calls"] == 1


def test_retry_runs_only_the_failed_items_and_the_history_records_item_failures(backend):
    """Given item 2 of 5 failing for good, When run, Then the step fails once the others
    completed and the history records the item's failure; When the cause is fixed and
    the task retried, Then only item 2 runs again and the step completes."""
    runs: list[int] = []
    broken = {"on": True}

    def each(task, sequence, step):  # type: ignore[no-untyped-def]
        runs.append(step.item_index)
        if step.item_index == 2 and broken["on"]:
            raise PermanentError("declined")
        return {"i": step.item_index}

    backend.register(
        task_class(
            "charge", [StepTemplate(name="each", handler=each, for_each=lambda t, s: list("abcde"))]
        )
    )
    t = backend.enqueue(TaskRequest(name="charge"))
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    step = view.steps["each"]
    assert (view.status, step.status, step.next_attempt_at) == ("error", "error", None)
    assert step.error["error_class"].endswith("ItemError") and step.error["items"] == [2]
    assert step.items == {"total": 5, "complete": 4, "error": 1, "pending": 0}
    failures = [h.reason for h in backend.history(t.task_id) if "item 2 failed" in h.reason]
    assert failures and "declined" in failures[0]
    assert sorted(runs) == [0, 1, 2, 3, 4]
    broken["on"] = False
    backend.retry(t.task_id)
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    assert view.status == "complete"
    assert sorted(runs) == [0, 1, 2, 2, 3, 4]
    assert view.steps["each"].results == {"items": [{"i": i} for i in range(5)]}


def test_an_item_waiting_for_its_backoff_leaves_the_step_awaiting_items(backend, clock):
    """Given an item that fails once, When run, Then the step waits ("items", due at the
    item's retry) holding no thread; When the clock passes it, Then only that item runs."""
    runs: list[int] = []

    def each(task, sequence, step):  # type: ignore[no-untyped-def]
        runs.append(step.item_index)
        if step.item_index == 0 and runs.count(0) == 1:
            raise RuntimeError("hiccup")

    backend.register(
        task_class("flaky", [StepTemplate(name="each", handler=each, for_each=lambda t, s: [1, 2])])
    )
    t = backend.enqueue(TaskRequest(name="flaky"))
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    step = view.steps["each"]
    assert (step.status, step.waiting_for, step.awaiting) == ("in_progress", "items", "items")
    assert step.next_attempt_at is not None and view.next_run_at == step.next_attempt_at
    clock.advance(600)
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    assert view.status == "complete"
    assert sorted(runs) == [0, 0, 1]
    assert view.steps["each"].results == {"items": [None, None]}
    assert view.steps["each"].attempts == 1  # items retried, not the step


def test_for_each_returning_non_json_fails_the_step_for_good_storing_no_item(backend):
    """Given a for_each returning a list with a set in it, When run, Then the step fails
    for good with a message saying so, and no item row exists."""
    backend.register(
        task_class(
            "bad_items",
            [StepTemplate(name="each", handler=lambda t, s, st: None, for_each=lambda t, s: [{1}])],
        )
    )
    t = backend.enqueue(TaskRequest(name="bad_items"))
    backend.run_until_idle()
    step = backend.get_task(t.task_id).steps["each"]
    assert step.status == "error" and step.next_attempt_at is None
    assert "not JSON" in step.error["message"]
    with backend.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(m.step_items)).scalar() == 0


def test_an_empty_list_completes_the_step_at_once(backend):
    """Given for_each returning [], Then the step completes with no items."""
    backend.register(
        task_class(
            "none",
            [StepTemplate(name="each", handler=lambda t, s, st: None, for_each=lambda t, s: [])],
        )
    )
    t = backend.enqueue(TaskRequest(name="none"))
    backend.run_until_idle()
    assert backend.get_task(t.task_id).steps["each"].results == {"items": []}


def test_concurrency_below_one_or_without_for_each_is_a_configuration_error():
    """Given concurrency 0, or concurrency on a plain step, Then the template is refused."""
    with pytest.raises(ConfigurationError, match="concurrency"):
        StepTemplate(
            name="x", handler=lambda t, s, st: None, for_each=lambda t, s: [], concurrency=0
        )
    with pytest.raises(ConfigurationError, match="for_each"):
        StepTemplate(name="x", handler=lambda t, s, st: None, concurrency=2)


def test_an_item_past_the_steps_timeout_fails_that_attempt_alone(backend, clock):
    """Given a step timeout of 0.3 s and an item whose first run sleeps 1 s, When run,
    Then that attempt fails with StepTimeoutError (recorded in the history) while the other
    items complete, and the item's retry, once its thread ended, completes the step."""
    import time

    runs: list[int] = []

    def each(task, sequence, step):  # type: ignore[no-untyped-def]
        runs.append(step.item_index)
        if step.item_index == 1 and step.attempts == 1:
            time.sleep(1.0)
        return {"i": step.item_index}

    backend.register(
        task_class(
            "slow_item",
            [StepTemplate(name="each", handler=each, timeout=0.3, for_each=lambda t, s: [0, 1, 2])],
        )
    )
    t = backend.enqueue(TaskRequest(name="slow_item"))
    backend.run_until_idle()
    step = backend.get_task(t.task_id).steps["each"]
    assert step.waiting_for == "items"
    assert step.items == {"total": 3, "complete": 2, "error": 1, "pending": 0}
    timed_out = [h.reason for h in backend.history(t.task_id) if "item 1 failed" in h.reason]
    assert timed_out and "StepTimeoutError" in timed_out[0]
    clock.advance(600)
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    assert view.status == "complete"
    assert view.steps["each"].results == {"items": [{"i": 0}, {"i": 1}, {"i": 2}]}
    assert sorted(runs) == [0, 1, 1, 2]


def test_spawn_in_an_items_handler_fails_the_item_saying_it_is_not_available(backend):
    """Given a for_each step whose handler spawns a sub-task for item 1 (retry_limit 1),
    When run, Then item 1 fails with InvalidStateError saying spawn() is not available in
    a for_each item's handler (no "call it from inside" advice: it was called there), the
    other items complete, the step fails for good naming item 1, and no sub-task exists."""
    backend.register(task_class("child", [StepTemplate(name="c", handler=lambda t, s, st: {})]))

    def each(task, sequence, step):  # type: ignore[no-untyped-def]
        if step.item_index == 1:
            step.spawn(TaskRequest(name="child"))
        return {"i": step.item_index}

    backend.register(
        task_class(
            "spawning_items",
            [
                StepTemplate(
                    name="each", handler=each, retry_limit=1, for_each=lambda t, s: [0, 1, 2]
                )
            ],
        )
    )
    t = backend.enqueue(TaskRequest(name="spawning_items"))
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    step = view.steps["each"]
    assert (view.status, step.status) == ("error", "error")
    assert step.error["items"] == [1]
    assert step.items == {"total": 3, "complete": 2, "error": 1, "pending": 0}
    (failure,) = [h.reason for h in backend.history(t.task_id) if "item 1 failed" in h.reason]
    assert "InvalidStateError" in failure
    assert "spawn() is not available in a for_each item's handler" in failure
    assert "inside" not in failure
    with backend.db.read() as conn:
        (error,) = conn.execute(
            sa.select(m.step_items.c.error).where(m.step_items.c.item_index == 1)
        ).scalars()
    assert error["error_class"].endswith("InvalidStateError")
    assert "not available in a for_each item's handler (step 'each', item 1)" in error["message"]
    assert list(view.children) == [] and backend.list_tasks(name="child") == []
