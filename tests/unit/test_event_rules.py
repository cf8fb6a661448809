"""Events (pure): which waiting step consumes which event, holding, IDLE and timeouts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from writes_support import NOW, RULES, step

from tasker import StepTemplate
from tasker.core.events import Event, assign
from tasker.core.planner import HELD_EVENT, StepState, Verdict, plan
from tasker.core.states import Status
from tasker.core.views import StepView
from tasker.core.waits import waiting_for
from tasker.core.writes import decide


def view(name: str, sid: int, **kw: Any) -> StepView:
    """Step `name` of id `sid` (the decisions tests' builder)."""
    return step(name, sid=sid, **kw)


def test_events_go_in_signal_order_to_waiting_steps_in_topological_order():
    """Given three steps waiting for "go" (one behind an unfinished step) and two free
    events, Then the first two waiting steps in order are offered the events in signal
    order, the one behind stays out, and a step that consumed one earlier keeps it."""
    steps = {
        "a": view("a", 1, wait_for="go"),
        "gate": view("gate", 2),
        "b": view("b", 3, deps=("gate",), wait_for="go"),
        "c": view("c", 4, wait_for="go"),
        "d": view("d", 5, status="error", wait_for="go"),
    }
    events = [Event(9, "go", "second"), Event(7, "go", "first"), Event(3, "go", "old", 5)]
    got = assign(steps, events, NOW)
    assert {n: e.payload for n, e in got.offered.items()} == {"a": "first", "c": "second"}
    assert got.holding["d"].payload == "old"
    assert got.waiting == []
    fewer = assign(steps, events[1:], NOW)
    assert list(fewer.offered) == ["a"] and fewer.waiting == ["c"]


def test_a_plan_with_only_held_steps_is_idle_and_a_timeout_makes_it_wait():
    """Given only a held step, Then the task is IDLE (nudged from outside) naming why;
    with a `held_until` it WAITs until then; a held step never starts."""
    held = {"ev": StepState("ev", Status.PENDING, None, (), held=HELD_EVENT)}
    idle = plan(held, NOW)
    assert (idle.verdict, idle.ready, idle.held) == (Verdict.IDLE, [], [HELD_EVENT])
    later = NOW + timedelta(hours=1)
    timed = {"ev": StepState("ev", Status.PENDING, None, (), held=HELD_EVENT, held_until=later)}
    assert (plan(timed, NOW).verdict, plan(timed, NOW).wake_at) == (Verdict.WAIT, later)
    both = {**held, "x": StepState("x", Status.PENDING, None, ())}
    assert plan(both, NOW).ready == ["x"]


def test_decide_consumes_the_event_in_the_write_that_starts_the_step():
    """Given a step waiting for "go" and a free event, Then the write starts it, records
    the consumption and the event it runs with; without an event it releases the task
    idle; past its wait_timeout it fails for good with WaitTimeoutError, using no attempt."""
    tpl = {"ev": StepTemplate(name="ev", wait_for="go", wait_timeout=60)}
    views = {"ev": view("ev", 11, wait_for="go")}
    w = decide(views, [], NOW, RULES, steps=tpl, created_at=NOW, events=[Event(4, "go", {"a": 1})])
    assert w.started == ["ev"] and w.consumed == [(4, 11)]
    assert w.events["ev"].payload == {"a": 1}
    idle = decide(views, [], NOW, RULES, created_at=NOW)
    assert idle.finish is not None and idle.finish.to_status is None
    assert idle.finish.wake_at is None and "event" in idle.finish.reason
    waiting = decide(views, [], NOW, RULES, steps=tpl, created_at=NOW)
    assert waiting.finish is not None and waiting.finish.wake_at == NOW + timedelta(seconds=60)
    late = decide(views, [], NOW + timedelta(seconds=61), RULES, steps=tpl, created_at=NOW)
    step = late.steps["ev"]
    assert (step.status, step.attempts, step.next_attempt_at) == ("error", 0, None)
    assert step.error is not None and step.error["error_class"].endswith("WaitTimeoutError")
    assert late.finish is not None and late.finish.to_status is Status.ERROR


def test_waiting_for_names_the_event_until_the_step_has_one():
    """Given a pending step with wait_for, Then reads say "event:<name>" once its
    dependencies are satisfied, "dependencies" before, and "limit" when a limit holds it."""
    assert waiting_for("pending", True, None, "in_progress", None, "go") == "event:go"
    assert waiting_for("pending", False, None, "in_progress", None, "go") == "dependencies"
    assert waiting_for("pending", True, None, "in_progress", limited=True) == "limit"
    assert waiting_for("pending", True, None, "paused", None, "go") == "paused"
    assert waiting_for("complete", True, None, "in_progress", None, "go") is None


def test_a_step_refused_a_limit_slot_is_held_and_its_later_start_says_it_waited():
    """Given two ready steps, one refused a slot by its limit, Then the write starts only
    the other; once the slot is granted, the start's history reason names the limit wait;
    a limit-held step with a recheck time makes a task with nothing else to do WAIT."""
    a, b = view("a", 1), view("b", 2)
    views = {"a": a, "b": b}
    later = NOW + timedelta(seconds=60)
    w = decide(views, [], NOW, RULES, created_at=NOW, limited={"b": ("limit", later)})
    assert w.started == ["a"] and w.wake_at == later
    again = decide(views, [], NOW, RULES, created_at=NOW, limit_waited={"b"})
    reasons = {c.name: c.reason for c in again.changes}
    assert reasons["b"] == "started after waiting for the limit of 'default'"
    assert reasons["a"] == "started"
    alone = decide({"b": b}, [], NOW, RULES, created_at=NOW, limited={"b": ("limit", later)})
    assert alone.finish is not None and alone.finish.wake_at == later
