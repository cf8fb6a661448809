"""The planner: which steps are ready, and what the task is now (pure decisions)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tasker.core.planner import Plan, StepState, Verdict, deps_satisfied, is_ready, plan
from tasker.core.states import Status

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


def st(
    name: str,
    status: Status = Status.PENDING,
    deps: tuple[str, ...] = (),
    next_at: datetime | None = None,
) -> StepState:
    return StepState(name, status, next_at, deps)


def steps(*states: StepState) -> dict[str, StepState]:
    return {s.name: s for s in states}


def waiting(name: str, seconds: float, deps: tuple[str, ...] = ()) -> StepState:
    """A step that failed and is due for another attempt `seconds` from NOW."""
    return st(name, Status.ERROR, deps, next_at=NOW + timedelta(seconds=seconds))


def failed(name: str, deps: tuple[str, ...] = ()) -> StepState:
    """A step that failed with no attempt left."""
    return st(name, Status.ERROR, deps, next_at=None)


def test_fresh_task_starts_only_its_roots():
    s = steps(st("a"), st("b"), st("c", deps=("a",)), st("d", deps=("b", "c")))
    assert plan(s, NOW) == Plan(["a", "b"], Verdict.RUN)


def test_a_multi_parent_join_waits_for_every_parent():
    s = steps(
        st("a", Status.COMPLETE),
        st("b", Status.IN_PROGRESS),
        st("join", deps=("a", "b")),
    )
    assert plan(s, NOW, running={"b"}) == Plan([], Verdict.RUN)
    s["b"] = st("b", Status.COMPLETE)
    assert plan(s, NOW) == Plan(["join"], Verdict.RUN)


@pytest.mark.parametrize("satisfied", [Status.COMPLETE, Status.RESOLVED_MANUALLY, Status.SKIPPED])
def test_complete_resolved_and_skipped_dependencies_all_satisfy(satisfied):
    s = steps(st("a", satisfied), st("b", Status.COMPLETE), st("join", deps=("a", "b")))
    assert deps_satisfied(s["join"], s)
    assert plan(s, NOW).ready == ["join"]


@pytest.mark.parametrize(
    "blocking", [Status.PENDING, Status.IN_PROGRESS, Status.ERROR, Status.CANCELLED]
)
def test_any_other_dependency_status_blocks(blocking):
    s = steps(st("a", blocking), st("b", deps=("a",)))
    assert not deps_satisfied(s["b"], s)
    assert not is_ready(s["b"], s, NOW)


def test_a_step_waiting_for_retry_is_ready_exactly_when_its_time_comes():
    s = steps(waiting("a", 30))
    assert not is_ready(s["a"], s, NOW)
    assert not is_ready(s["a"], s, NOW + timedelta(seconds=29.999))
    assert is_ready(s["a"], s, NOW + timedelta(seconds=30))
    assert plan(s, NOW + timedelta(seconds=31)) == Plan(["a"], Verdict.RUN)


def test_running_steps_are_not_offered_again_and_keep_the_task_running():
    s = steps(st("a", Status.IN_PROGRESS), st("b"))
    assert plan(s, NOW, running={"a"}) == Plan(["b"], Verdict.RUN)
    s = steps(st("a", Status.IN_PROGRESS))
    assert plan(s, NOW, running={"a"}) == Plan([], Verdict.RUN)


def test_only_backoffs_left_means_wait_until_the_earliest_retry():
    s = steps(waiting("a", 90), waiting("b", 15), waiting("c", 40), st("d", deps=("a",)))
    assert plan(s, NOW) == Plan([], Verdict.WAIT, wake_at=NOW + timedelta(seconds=15))


def test_a_failed_step_with_a_retry_pending_elsewhere_waits_rather_than_errors():
    s = steps(failed("a"), waiting("b", 60))
    decision = plan(s, NOW)
    assert decision.verdict is Verdict.WAIT
    assert decision.wake_at == NOW + timedelta(seconds=60)


def test_every_step_satisfied_means_complete():
    s = steps(
        st("a", Status.COMPLETE),
        st("b", Status.SKIPPED),
        st("c", Status.RESOLVED_MANUALLY, deps=("a", "b")),
    )
    assert plan(s, NOW) == Plan([], Verdict.COMPLETE)


def test_a_step_failed_for_good_with_nothing_else_to_do_means_error():
    s = steps(st("a", Status.COMPLETE), failed("b", ("a",)), st("c", deps=("b",)))
    assert plan(s, NOW) == Plan([], Verdict.ERROR)


def test_independent_branches_keep_running_while_another_branch_failed_for_good():
    s = steps(
        failed("bad"),
        st("after_bad", deps=("bad",)),
        st("good", Status.COMPLETE),
        st("after_good", deps=("good",)),
        st("also_free"),
    )
    decision = plan(s, NOW)
    assert decision == Plan(["after_good", "also_free"], Verdict.RUN)
    assert "after_bad" not in decision.ready


def test_a_branch_still_running_keeps_a_failed_task_running():
    s = steps(failed("bad"), st("slow", Status.IN_PROGRESS))
    assert plan(s, NOW, running={"slow"}).verdict is Verdict.RUN


def test_ready_steps_keep_the_given_topological_order():
    s = steps(st("z"), st("m"), st("a"))
    assert plan(s, NOW).ready == ["z", "m", "a"]


def test_only_a_failed_step_with_a_time_for_its_next_attempt_awaits_a_retry():
    assert waiting("a", 5).awaiting_retry
    assert not failed("a").awaiting_retry
    assert not st("a").awaiting_retry


def test_an_empty_task_is_complete():
    assert plan({}, NOW) == Plan([], Verdict.COMPLETE)


def test_a_retry_behind_a_running_sibling_gives_the_running_plan_its_due_time():
    """Given a step waiting for its retry in 1 s and a sibling running,
    when planned, then the task runs and the plan says to wake at the retry's due time
    (the earliest of them), and once that time comes the retry is ready."""
    s = steps(st("slow", Status.IN_PROGRESS), waiting("a", 1), waiting("b", 5))
    decision = plan(s, NOW, running={"slow"})
    assert decision == Plan([], Verdict.RUN, wake_at=NOW + timedelta(seconds=1))
    later = plan(s, NOW + timedelta(seconds=1), running={"slow"})
    assert later == Plan(["a"], Verdict.RUN, wake_at=NOW + timedelta(seconds=5))


def test_the_running_plan_does_not_wake_for_retries_that_cannot_start():
    """Given retries that are running (abandoned) or whose dependencies no longer hold,
    when planned with a sibling running, then no wake time is given for them."""
    s = steps(
        st("slow", Status.IN_PROGRESS),
        waiting("abandoned", 1),
        st("blocker", Status.PENDING, deps=("slow",)),
        waiting("blocked", 1, deps=("blocker",)),
    )
    assert plan(s, NOW, running={"slow", "abandoned"}) == Plan([], Verdict.RUN)


# -- pending steps with a "not before" time: waits and reattempts (issue 9) ----------


def test_a_pending_step_with_a_due_time_waits_until_then():
    """Given a pending step due in 60 s, Then it is not ready now, and the task waits for it."""
    s = steps(st("a", Status.COMPLETE), st("b", deps=("a",), next_at=NOW + timedelta(seconds=60)))
    assert not is_ready(s["b"], s, NOW)
    assert plan(s, NOW) == Plan([], Verdict.WAIT, wake_at=NOW + timedelta(seconds=60))
    assert is_ready(s["b"], s, NOW + timedelta(seconds=60))
    assert plan(s, NOW + timedelta(seconds=61)).ready == ["b"]


def test_a_wait_while_a_sibling_runs_wakes_the_pass_when_due():
    """Given a running step and a sibling due in 30 s, Then the plan runs and wakes at 30 s."""
    s = steps(st("a", Status.IN_PROGRESS), st("b", next_at=NOW + timedelta(seconds=30)))
    decision = plan(s, NOW, running={"a"})
    assert decision.verdict is Verdict.RUN and decision.ready == []
    assert decision.wake_at == NOW + timedelta(seconds=30)
