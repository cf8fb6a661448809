"""What one engine write stores for waits and flow requests (tasker.core.writes.decide)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from test_writes import NOW, RULES, running, step, views

from tasker import StepTemplate
from tasker.core.states import Status
from tasker.core.writes import decide
from tasker.store.lease import Finish


@dataclass
class Ended:
    name: str
    ok: bool = False
    results: Any = None
    error: dict[str, Any] | None = None
    retry_after: float | None = None
    permanent: bool = False
    flow: str | None = None
    wait: float | None = None
    reason: str = ""
    spawned: tuple[Any, ...] = ()
    decision: tuple[str, ...] | None = None


def _noop(task, sequence, step):  # type: ignore[no-untyped-def]
    return None


def test_a_step_whose_dependency_just_completed_gets_its_wait_as_due_time_and_the_task_waits():
    """Given b waits an hour after a, When a completes, Then b's due time is stored and the
    task is released until then."""
    templates = {"b": StepTemplate(name="b", handler=_noop, depends_on=["a"], wait=3600)}
    v = views(running("a"), step("b", deps=("a",)))
    w = decide(v, [Ended("a", ok=True)], NOW, RULES, steps=templates, created_at=NOW)
    due = NOW + timedelta(hours=1)
    assert w.steps["b"].next_attempt_at == due
    assert w.started == []
    assert w.finish == Finish(None, due, "waiting for a retry")


def test_a_pause_waits_for_the_running_sibling_then_ends_the_pass_paused():
    """Given a asks to pause while b runs, Then nothing starts and the pass goes on; once b's
    outcome is recorded, the write pauses the task with the reason."""
    v = views(running("a"), running("b"), step("c", deps=("a", "b")))
    first = decide(v, [Ended("a", flow="pause", reason="look")], NOW, RULES, running={"b"}, busy=1)
    assert first.finish is None and first.started == []
    assert first.steps["a"].status == Status.PENDING.value
    assert first.asked is not None and "look" in first.asked[1]
    then = {**v, **first.steps}
    second = decide(then, [Ended("b", ok=True)], NOW, RULES, asked=first.asked)
    assert second.finish is not None and second.finish.to_status is Status.PAUSED
    assert second.started == []


def test_a_cancel_cancels_every_unfinished_step_at_once_even_a_running_one():
    """Given a asks to cancel while b runs, Then a, b and c are cancelled and the task too."""
    v = views(running("a"), running("b"), step("c", deps=("a", "b")), step("d", Status.COMPLETE))
    w = decide(v, [Ended("a", flow="cancel", reason="closed")], NOW, RULES, running={"b"}, busy=1)
    assert {n: s.status for n, s in w.steps.items()} == dict.fromkeys("abc", "cancelled")
    assert w.finish is not None and w.finish.to_status is Status.CANCELLED
    assert "closed" in w.finish.reason
