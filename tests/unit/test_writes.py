"""What one engine write stores (tasker.core.writes): pure decisions, like the planner."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from tasker.core.states import Status
from tasker.core.views import StepView
from tasker.core.writes import WORKER_LOST, Rules, decide
from tasker.store.audit import StepChange
from tasker.store.lease import Finish

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
RULES = Rules(backoff_base=1, backoff_max=300, max_concurrent_steps=8)


def step(
    name: str,
    status: Status = Status.PENDING,
    deps: tuple[str, ...] = (),
    attempts: int = 0,
    retry_limit: int = 3,
    next_at: datetime | None = None,
    retryable: bool = True,
) -> StepView:
    return StepView(
        workflow_step_id=hash(name) % 1000,
        name=name,
        status=status.value,
        attempts=attempts,
        retry_limit=retry_limit,
        retryable=retryable,
        skippable=False,
        depends_on=deps,
        dependent_system="default",
        inputs=None,
        results=None,
        error=None,
        last_attempted_at=None,
        next_attempt_at=next_at,
    )


def running(name: str, deps: tuple[str, ...] = (), attempts: int = 1, **kw: Any) -> StepView:
    return step(name, Status.IN_PROGRESS, deps, attempts=attempts, **kw)


def views(*steps: StepView) -> dict[str, StepView]:
    return {s.name: s for s in steps}


@dataclass
class Ended:
    name: str
    ok: bool
    results: Any = None
    error: dict[str, Any] | None = None
    retry_after: float | None = None
    permanent: bool = False
    flow: str | None = None
    wait: float | None = None
    reason: str = ""
    spawned: tuple[Any, ...] = ()
    decision: tuple[str, ...] | None = None


def failed(name: str, **kw: Any) -> Ended:
    return Ended(name, ok=False, error={"message": "boom", "error_class": "E"}, **kw)


def test_a_success_completes_the_step_and_starts_its_dependents_in_the_same_write():
    """Given a running root and two pending children, when the root succeeds, then the
    write completes it and starts both children (attempt 1), with their transitions."""
    v = views(running("a"), step("b", deps=("a",)), step("c", deps=("a",)))
    w = decide(v, [Ended("a", ok=True, results={"x": 1})], NOW, RULES)

    a = w.steps["a"]
    assert (a.status, a.results, a.error, a.processed_at) == ("complete", {"x": 1}, None, NOW)
    assert w.started == ["b", "c"]
    for name in ("b", "c"):
        assert (w.steps[name].status, w.steps[name].attempts) == ("in_progress", 1)
        assert w.steps[name].last_attempted_at == NOW
    assert [(c.name, c.from_status, c.to_status, c.reason) for c in w.changes] == [
        ("a", Status.IN_PROGRESS, Status.COMPLETE, "succeeded"),
        ("b", Status.PENDING, Status.IN_PROGRESS, "started"),
        ("c", Status.PENDING, Status.IN_PROGRESS, "started"),
    ]
    assert w.finish is None and w.notify_at is None


def test_a_retryable_failure_beside_a_running_sibling_waits_exactly_retry_after():
    """Given a step failing with retry_after=1 while its sibling runs, then it is in error
    due in exactly 1 s, nothing is started, and the pass is told to wake then."""
    v = views(running("a"), running("b"))
    w = decide(v, [failed("a", retry_after=1)], NOW, RULES, running={"b"}, busy=1)

    a = w.steps["a"]
    assert (a.status, a.next_attempt_at, a.processed_at) == (
        "error",
        NOW + timedelta(seconds=1),
        None,
    )
    assert a.error == {"message": "boom", "error_class": "E"}
    assert w.changes == [
        StepChange(a.workflow_step_id, "a", Status.IN_PROGRESS, Status.ERROR, 1, "E: boom", a.error)
    ]
    assert (w.started, w.finish, w.wake_at) == ([], None, NOW + timedelta(seconds=1))


def test_only_a_backoff_left_releases_the_task_until_it_is_due():
    """Given a lone step failing with attempts left, then the task is released until the
    retry is due, with a message for that time."""
    w = decide(views(running("a")), [failed("a", retry_after=30)], NOW, RULES)
    due = NOW + timedelta(seconds=30)
    assert w.finish == Finish(None, due, "waiting for a retry")
    assert w.notify_at == due


def test_a_retry_due_at_once_is_started_again_in_the_same_write():
    """Given a failure with retry_after=0, then the step is recorded in error and started
    again (attempt 2) in the same write."""
    w = decide(views(running("a")), [failed("a", retry_after=0)], NOW, RULES)
    assert w.started == ["a"]
    assert (w.steps["a"].status, w.steps["a"].attempts) == ("in_progress", 2)
    assert [c.to_status for c in w.changes] == [Status.ERROR, Status.IN_PROGRESS]


def test_a_permanent_or_last_failure_is_final_and_errors_the_task():
    """Given a permanent error, or a failure on the last (or only, not retryable) attempt,
    then the step is in final error and, with nothing else to do, the task errors."""
    for v, outcome in (
        (views(running("a")), failed("a", permanent=True)),
        (views(running("a", attempts=3)), failed("a")),
        (views(running("a", retryable=False)), failed("a")),
    ):
        w = decide(v, [outcome], NOW, RULES)
        assert (w.steps["a"].next_attempt_at, w.steps["a"].processed_at) == (None, NOW)
        assert w.finish == Finish(Status.ERROR, None, "no attempt left for: a")


def test_the_last_success_completes_the_task():
    v = views(step("a", Status.COMPLETE), running("b", deps=("a",)))
    w = decide(v, [Ended("b", ok=True)], NOW, RULES)
    assert w.finish == Finish(Status.COMPLETE, None, "all steps done")
    assert w.started == []


def test_the_concurrency_bound_counts_the_busy_attempts():
    """Given max_concurrent_steps=2 with one attempt busy and three ready steps, then one
    is started; attempts past their time limit (running but not busy) do not count."""
    rules = replace(RULES, max_concurrent_steps=2)
    v = views(running("slow"), step("a"), step("b"), step("c"))
    assert decide(v, [], NOW, rules, running={"slow"}, busy=1).started == ["a"]
    assert decide(v, [], NOW, rules, running={"slow"}, busy=0).started == ["a", "b"]


def test_a_step_still_running_is_never_started_again_even_when_due():
    """Given a step whose abandoned attempt still runs, with its retry due, then it is not
    started, and the pass goes on holding the lease."""
    v = views(step("a", Status.ERROR, attempts=1, next_at=NOW))
    w = decide(v, [], NOW, RULES, running={"a"}, busy=0)
    assert (w.started, w.steps, w.finish) == ([], {}, None)


def test_a_stopping_worker_starts_nothing_and_hands_the_task_back():
    """Given a stopping worker, when a step succeeds and its dependent is ready, then
    nothing starts and, with nothing in flight, the task is released due now."""
    v = views(running("a"), step("b", deps=("a",)))
    w = decide(v, [Ended("a", ok=True)], NOW, RULES, stopping=True)
    assert w.started == []
    assert w.finish == Finish(None, NOW, "worker shutting down")
    assert w.notify_at == NOW


def test_recovery_counts_steps_left_in_progress_as_failed_attempts():
    """Given the first write of a pass over a step left in progress by a lost worker,
    then it is a failed attempt (worker lost), retried by the same rules."""
    v = views(running("a", attempts=1), step("b"))
    w = decide(v, [], NOW, RULES, recover=True)
    a = w.steps["a"]
    assert (a.status, a.error) == ("error", WORKER_LOST)
    assert a.next_attempt_at is not None and a.next_attempt_at > NOW
    assert w.changes[0].reason.startswith("tasker.errors.WorkerLostError: worker lost")
    assert w.started == ["b"]


def test_decide_changes_nothing_it_is_given():
    v = views(running("a"), step("b", deps=("a",)))
    before = dict(v)
    decide(v, [Ended("a", ok=True)], NOW, RULES)
    assert v == before
