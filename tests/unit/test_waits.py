"""Due times of waits and `waiting_for`: the pure rules of tasker.core.waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tasker.core.views import StepView
from tasker.core.waits import satisfied_at, wait_due, waiting_for, with_waiting_for

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_satisfied_at_is_the_last_dependency_or_the_task_creation():
    """Given dependencies done at different times, Then the latest counts; none: creation."""
    assert satisfied_at([T0, T0 + timedelta(hours=2), None], T0) == T0 + timedelta(hours=2)
    assert satisfied_at([], T0 - timedelta(days=1)) == T0 - timedelta(days=1)


def test_wait_counts_from_satisfaction_after_from_creation_and_the_later_wins():
    """Given wait and after, When both are set, Then the later due time wins."""
    created, since = T0, T0 + timedelta(hours=5)
    assert wait_due(3600, None, since, created) == since + timedelta(hours=1)
    assert wait_due(None, 3600, since, created) == created + timedelta(hours=1)
    assert wait_due(3600, 10 * 3600, since, created) == created + timedelta(hours=10)
    assert wait_due(None, None, since, created) is None


@pytest.mark.parametrize(
    ("status", "deps", "due", "task", "expected"),
    [
        ("pending", False, None, "in_progress", "dependencies"),
        ("pending", True, T0, "in_progress", "time"),
        ("pending", True, None, "pending", None),
        ("error", True, T0, "in_progress", "time"),  # a backoff
        ("error", True, None, "error", None),  # failed for good: not waiting
        ("pending", True, None, "paused", "paused"),
        ("pending", False, None, "paused", "paused"),
        ("in_progress", True, None, "in_progress", None),
        ("complete", True, None, "complete", None),
        ("skipped", True, None, "paused", None),
    ],
)
def test_waiting_for_says_why_a_live_step_is_not_running(status, deps, due, task, expected):
    """Given a step's status, its dependencies, its due time and its task, Then the reason."""
    assert waiting_for(status, deps, due, task) == expected


@pytest.mark.parametrize("task", ["error", "cancelled", "complete", "resolved_manually"])
@pytest.mark.parametrize(
    ("status", "deps", "due", "awaiting", "event", "limited"),
    [
        ("pending", False, None, None, None, False),  # after a step that failed for good
        ("pending", True, T0, None, None, False),  # its wait was due later
        ("pending", True, None, None, "go", False),  # its event never came
        ("pending", True, None, None, None, True),  # held by a limit
        ("error", True, T0, None, None, False),  # a backoff the task's end overtook
        ("in_progress", True, None, "children", None, False),
        ("in_progress", True, None, "items", None, False),
    ],
)
def test_no_step_of_a_task_that_ended_waits_for_anything(
    task, status, deps, due, awaiting, event, limited
):
    """Given a task that ended (in error, or otherwise), Then none of its steps shows a
    `waiting_for`: they will not run unless a person steps in (API.md: "why a live step
    is not running now")."""
    assert waiting_for(status, deps, due, task, awaiting, event, limited) is None


def _view(step_id: int, name: str, status: str, depends_on: tuple[str, ...] = ()) -> StepView:
    return StepView(
        step_id, name, status, 0, 3, True, False, depends_on, "default", None, None, None,
        None, None,
    )  # fmt: skip


def test_with_waiting_for_reads_the_dependencies_of_each_step():
    """Given a chain a -> b -> c with a complete, Then c waits for dependencies, b for nothing."""
    steps = {
        "a": _view(1, "a", "complete"),
        "b": _view(2, "b", "pending", ("a",)),
        "c": _view(3, "c", "pending", ("b",)),
    }
    out = with_waiting_for(steps, "in_progress")
    assert [out[n].waiting_for for n in "abc"] == [None, None, "dependencies"]


def test_a_step_idempotency_key_is_stable_per_step_and_differs_between_steps():
    """Given two steps, Then each key is derived from its step id, unchanged by replace()."""
    from dataclasses import replace

    a, b = _view(1, "a", "pending"), _view(2, "a", "pending")
    assert a.idempotency_key != b.idempotency_key
    assert replace(a, status="error", attempts=2).idempotency_key == a.idempotency_key


def test_an_after_earlier_than_the_dependencies_waits_allow_is_reported():
    """Given a -> (wait 2 days) b -> c with after=1 day, Then c's after is reported; an after
    of 3 days, or a step with no waits before it, is fine."""
    from tasker.core.waits import after_problems

    day = 86400.0
    deps = {"a": (), "b": ("a",), "c": ("b",)}
    short = {"b": (2 * day, None), "c": (None, day)}
    (problem,) = after_problems(["a", "b", "c"], deps, short)
    assert "'c'" in problem and "after=86400" in problem
    assert after_problems(["a", "b", "c"], deps, {"b": (2 * day, None), "c": (None, 3 * day)}) == []
    assert after_problems(["a", "b", "c"], deps, {"c": (None, day)}) == []
