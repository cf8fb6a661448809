"""What one engine write stores for sub-tasks (tasker.core.writes with tasker.core.spawns)."""

from __future__ import annotations

from dataclasses import replace

from test_writes import NOW, RULES, Ended, running, step, views

from tasker.core.planner import StepState, Verdict, plan
from tasker.core.spawns import Children, Spawn
from tasker.core.states import Status
from tasker.core.writes import decide


def _awaiting(name: str, **kw: object) -> object:
    return replace(running(name, **kw), awaiting="children")  # type: ignore[arg-type]


def test_a_success_that_spawned_awaited_children_leaves_the_step_awaiting_and_idle():
    """Given a step that succeeded after spawning two new children it waits for, then the
    write inserts both, keeps the step in progress awaiting "children" with its results,
    and releases the task idle (no due time, no message)."""
    spawned = (Spawn("0", 11, True, "row-11"), Spawn("1", 12, True, "row-12"))
    v = views(running("a"), step("b", deps=("a",)))
    w = decide(v, [Ended("a", ok=True, results={"n": 2}, spawned=spawned)], NOW, RULES)

    a = w.steps["a"]
    assert (a.status, a.awaiting, a.results, a.processed_at) == (
        "in_progress",
        "children",
        {"n": 2},
        None,
    )
    assert w.spawned == ["row-11", "row-12"]
    assert [(c.from_status, c.to_status, c.reason) for c in w.changes] == [
        (Status.IN_PROGRESS, Status.IN_PROGRESS, "spawned 2 sub-task(s); waiting for 2")
    ]
    assert w.started == [] and w.idle
    assert w.finish is not None and (w.finish.to_status, w.finish.wake_at) == (None, None)
    assert w.notify_at is None


def test_children_not_waited_for_are_inserted_and_the_step_completes():
    """Given a step that spawned a child with wait=False, then it completes at once."""
    w = decide(
        views(running("a")), [Ended("a", ok=True, spawned=(Spawn("0", 5, False, "r"),))], NOW, RULES
    )
    assert (w.steps["a"].status, w.spawned, w.idle) == ("complete", ["r"], False)


def test_a_failed_attempt_spawns_nothing():
    """Given a step that spawned then raised, then nothing is inserted."""
    spawned = (Spawn("0", 11, True, "row-11"),)
    ended = Ended("a", ok=False, error={"message": "boom", "error_class": "E"}, spawned=spawned)
    w = decide(views(running("a")), [ended], NOW, RULES)
    assert w.spawned == [] and w.steps["a"].status == "error"


def test_a_step_awaiting_children_is_not_lost_on_recovery():
    """Given a new pass over a task whose step awaits children, then the step is left
    awaiting (it has no thread: it is not "worker lost") and the task stays idle."""
    w = decide(views(_awaiting("a")), [], NOW, RULES, recover=True)  # type: ignore[arg-type]
    assert "a" not in w.steps and w.idle


def test_the_step_completes_once_every_awaited_child_is_done():
    """Given a step awaiting children all complete or resolved, then it completes and its
    dependent starts; with one still live it stays awaiting."""
    v = views(_awaiting("a"), step("b", deps=("a",)))  # type: ignore[arg-type]
    live = decide(
        v, [], NOW, RULES, children={"a": Children.of([(1, "complete"), (2, "in_progress")])}
    )
    assert "a" not in live.steps and live.idle
    done = decide(
        v, [], NOW, RULES, children={"a": Children.of([(1, "complete"), (2, "resolved_manually")])}
    )
    assert (done.steps["a"].status, done.steps["a"].awaiting) == ("complete", None)
    assert done.started == ["b"]


def test_a_child_in_error_or_cancelled_fails_the_step_for_good_naming_it():
    """Given a step awaiting a child that ended in error, then the step fails for good
    (no next attempt) with a SubTaskError naming the child, and the task ends in error."""
    v = views(_awaiting("a"))  # type: ignore[arg-type]
    for status in ("error", "cancelled"):
        w = decide(v, [], NOW, RULES, children={"a": Children.of([(1, "complete"), (7, status)])})
        a = w.steps["a"]
        assert (a.status, a.next_attempt_at, a.awaiting) == ("error", None, None)
        assert "sub-task 7" in a.error["message"] and a.error["task_id"] == 7
        assert a.error["error_class"].endswith("SubTaskError")
        assert w.finish is not None and w.finish.to_status is Status.ERROR


def test_children_just_spawned_are_not_settled_from_an_older_read():
    """Given a step that just spawned a new child, then an (older) read of its children
    that lacks that child does not complete it."""
    spawned = (Spawn("0", 11, True, "row"),)
    w = decide(
        views(running("a")),
        [Ended("a", ok=True, spawned=spawned)],
        NOW,
        RULES,
        children={"a": Children.of([])},
    )
    assert w.steps["a"].awaiting == "children" and w.idle


def test_the_planner_is_idle_while_a_step_awaits_and_nothing_else_can_run():
    """Given one step failed for good and another awaiting, then the verdict is IDLE (not
    ERROR): the awaiting step may still progress when nudged."""
    steps = {
        "a": StepState("a", Status.ERROR, None, ()),
        "b": StepState("b", Status.IN_PROGRESS, None, (), awaiting=True),
    }
    assert plan(steps, NOW).verdict is Verdict.IDLE


def test_only_an_ending_write_of_an_awaited_child_wakes_its_parent():
    """Given a child's row, Then its complete/error/cancelled write wakes the parent when the
    parent waits for it; a release, a pause, a parent not waiting or no parent wake nobody."""
    from tasker.core.spawns import parent_to_wake
    from tasker.store.lease import Finish

    child = {"parent_task_id": 7, "parent_waits": True}
    for status in (Status.COMPLETE, Status.ERROR, Status.CANCELLED):
        assert parent_to_wake(Finish(status, None, ""), child) == 7
    assert parent_to_wake(Finish(Status.PAUSED, None, ""), child) is None
    assert parent_to_wake(Finish(None, NOW, ""), child) is None
    assert parent_to_wake(None, child) is None
    assert (
        parent_to_wake(Finish(Status.COMPLETE, None, ""), {**child, "parent_waits": False}) is None
    )
    assert parent_to_wake(Finish(Status.COMPLETE, None, ""), {"parent_task_id": None}) is None
