"""Sub-tasks (`step.spawn`), on SQLite and PostgreSQL: children inserted with the
parent's outcome, awaited through the outbox, cancel and retry across the family."""

from __future__ import annotations

from datetime import timedelta

import pytest
from integration_support import task_class

from tasker import StepTemplate, TaskRequest
from tasker.errors import InvalidStateError, PermanentError


def _ok(task, sequence, step):  # type: ignore[no-untyped-def]
    return {"ok": task.context.get("n")}


def _register_child(app, *, later: bool = False, fail: bool = False) -> None:  # type: ignore[no-untyped-def]
    def work(task, sequence, step):  # type: ignore[no-untyped-def]
        if fail and not step.inputs.get("fixed"):
            raise PermanentError("child broke")
        return {"n": task.context.get("n")}

    after = timedelta(hours=1) if later else None
    app.register(task_class("child", [StepTemplate(name="work", handler=work, after=after)]))


def _parent(app, n: int, *, wait: bool = True, retry_limit: int = 3) -> None:  # type: ignore[no-untyped-def]
    def fan_out(task, sequence, step):  # type: ignore[no-untyped-def]
        ids = [step.spawn(TaskRequest(name="child", context={"n": i}), wait=wait) for i in range(n)]
        return {"ids": ids}

    app.register(
        task_class(
            "parent",
            [
                StepTemplate(name="fan_out", handler=fan_out, retry_limit=retry_limit),
                StepTemplate(name="after", handler=_ok, depends_on=["fan_out"]),
            ],
        )
    )


def test_a_step_waits_for_its_children_and_completes_when_they_have(backend, clock):
    """Given a step spawning 3 children that run an hour later, When run, Then the step
    awaits "children" (released, no due time) until the clock passes the hour and the
    children complete; each child names its parent, and the history records the spawn."""
    _register_child(backend, later=True)
    _parent(backend, 3)
    t = backend.enqueue(TaskRequest(name="parent"))
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    step = view.steps["fan_out"]
    assert (step.status, step.waiting_for, step.awaiting) == ("in_progress", "children", "children")
    assert view.steps["after"].waiting_for == "dependencies"
    assert list(view.children) == step.results["ids"]
    assert view.next_run_at is None  # idle until nudged
    for child_id in view.children:
        child = backend.get_task(child_id)
        assert child.parent_task_id == t.task_id and child.status in ("pending", "in_progress")
    clock.advance(3601)
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    assert view.status == "complete"
    assert view.steps["fan_out"].waiting_for is None
    assert all(backend.get_task(c).status == "complete" for c in view.children)
    reasons = [h.reason for h in backend.history(t.task_id) if h.step == "fan_out"]
    assert "spawned 3 sub-task(s); waiting for 3" in reasons
    assert "all 3 sub-task(s) done" in reasons


def test_children_not_waited_for_do_not_hold_the_step(backend, clock):
    """Given spawns with wait=False, When run, Then the parent completes while its
    children still wait for their time."""
    _register_child(backend, later=True)
    _parent(backend, 2, wait=False)
    t = backend.enqueue(TaskRequest(name="parent"))
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    assert view.status == "complete"
    assert [backend.get_task(c).status for c in view.children] == ["in_progress"] * 2


def test_spawning_an_unknown_task_fails_the_attempt_and_spawns_nothing(backend):
    """Given a handler spawning a known child then an unknown name, When run, Then the
    attempt fails with UnknownTaskError and no child exists."""

    def spawn(task, sequence, step):  # type: ignore[no-untyped-def]
        step.spawn(TaskRequest(name="child"))
        step.spawn(TaskRequest(name="no_such_task"))

    _register_child(backend)
    backend.register(
        task_class("bad_spawn", [StepTemplate(name="s", handler=spawn, retry_limit=1)])
    )
    t = backend.enqueue(TaskRequest(name="bad_spawn"))
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    assert view.status == "error"
    assert view.steps["s"].error["error_class"].endswith("UnknownTaskError")
    assert list(view.children) == []
    assert backend.list_tasks(name="child") == []


def test_spawn_outside_a_running_handler_is_refused(backend):
    """Given a step object kept after its handler returned, When spawn is called on it,
    Then InvalidStateError says to call it from inside the handler."""
    kept = []

    def keep(task, sequence, step):  # type: ignore[no-untyped-def]
        kept.append(step)

    _register_child(backend)
    backend.register(task_class("keeper", [StepTemplate(name="k", handler=keep)]))
    backend.enqueue(TaskRequest(name="keeper"))
    backend.run_until_idle()
    with pytest.raises(InvalidStateError, match="inside"):
        kept[0].spawn(TaskRequest(name="child"))
    assert backend.list_tasks(name="child") == []


def test_a_failed_child_fails_the_step_and_retry_of_the_parent_retries_it(backend, clock):
    """Given a child that fails for good, When run, Then the parent step fails for good
    naming the child; When the child is fixed and the parent retried, Then the child is
    retried (the same child: the handler's spawn gets its id back) and the parent completes."""
    _register_child(backend, fail=True)
    _parent(backend, 1)
    t = backend.enqueue(TaskRequest(name="parent"))
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    (child_id,) = view.children
    step = view.steps["fan_out"]
    assert (view.status, step.status, step.next_attempt_at) == ("error", "error", None)
    assert str(child_id) in step.error["message"]
    assert step.error["error_class"].endswith("SubTaskError")
    # The fix: the child's next attempt sees fixed=True through its step inputs.
    backend.update_step(child_id, "work", inputs={"fixed": True})
    backend.retry(t.task_id)
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    assert view.status == "complete"
    assert list(view.children) == [child_id]
    assert view.steps["fan_out"].results == {"ids": [child_id]}
    assert backend.get_task(child_id).status == "complete"


def test_cancelling_the_parent_cancels_its_live_children(backend):
    """Given a parent waiting for children that wait for time, When the parent is
    cancelled, Then every child is cancelled too."""
    _register_child(backend, later=True)
    _parent(backend, 3)
    t = backend.enqueue(TaskRequest(name="parent"))
    backend.run_until_idle()
    backend.cancel(t.task_id)
    view = backend.get_task(t.task_id)
    assert view.status == "cancelled"
    assert [backend.get_task(c).status for c in view.children] == ["cancelled"] * 3


def test_cancelling_a_child_fails_the_step_waiting_for_it(backend):
    """Given a parent waiting for 2 children, When one child is cancelled, Then its
    nudge wakes the parent, whose step fails for good naming that child."""
    _register_child(backend, later=True)
    _parent(backend, 2)
    t = backend.enqueue(TaskRequest(name="parent"))
    backend.run_until_idle()
    first = backend.get_task(t.task_id).children[0]
    backend.cancel(first)
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    assert view.steps["fan_out"].status == "error"
    assert f"sub-task {first} ended cancelled" in view.steps["fan_out"].error["message"]


def test_a_fan_out_of_a_thousand_children_completes(backend):
    """Given a step spawning 1,000 children, When run, Then they all run and the parent
    completes, with 1,000 distinct children in spawn order."""
    _register_child(backend)
    _parent(backend, 1000)
    t = backend.enqueue(TaskRequest(name="parent"))
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    assert view.status == "complete"
    assert len(set(view.children)) == 1000
    assert list(view.children) == sorted(view.children)
    assert view.steps["fan_out"].results["ids"] == list(view.children)


def _register_routed(app, *, take: str = "express", retry_limit: int = 3) -> None:  # type: ignore[no-untyped-def]
    """A decision step spawning 2 children it waits for, then choosing a branch.

    It takes `step.inputs["take"]` if set, else `take`. Below it: "fast" (branch
    "express"), "slow" and "after_slow" below it (branch "standard"), and "join" on both.
    """

    def route(task, sequence, step):  # type: ignore[no-untyped-def]
        from tasker import Decision

        ids = [step.spawn(TaskRequest(name="child", context={"n": i})) for i in range(2)]
        chosen = (step.inputs or {}).get("take", take)
        return Decision(chosen, results={"ids": ids, "took": chosen})

    app.register(
        task_class(
            "routed",
            [
                StepTemplate(
                    name="route", handler=route, retry_limit=retry_limit,
                    branches={"express": ["fast"], "standard": ["slow"]},
                ),
                StepTemplate(name="fast", handler=_ok, depends_on=["route"]),
                StepTemplate(name="slow", handler=_ok, depends_on=["route"]),
                StepTemplate(name="after_slow", handler=_ok, depends_on=["slow"]),
                StepTemplate(name="join", handler=_ok, depends_on=["fast", "after_slow"]),
            ],
        )
    )  # fmt: skip


def test_a_decision_step_awaiting_its_children_skips_the_branches_not_taken_when_done(
    make_app, clock
):
    """Given a decision step that spawns 2 children (which run an hour later) and chooses
    "express", When run, Then it awaits its children and no branch is settled yet; When
    another app (nothing kept in memory) runs the children and the parent, Then the step
    completes with its results, the "standard" branch and the step only below it are
    skipped, and the express branch and the join run."""
    first = make_app()
    _register_child(first, later=True)
    _register_routed(first)
    t = first.enqueue(TaskRequest(name="routed"))
    first.run_until_idle()
    view = first.get_task(t.task_id)
    route = view.steps["route"]
    assert (route.status, route.waiting_for) == ("in_progress", "children")
    assert all(view.steps[n].status == "pending" for n in ("fast", "slow", "after_slow", "join"))
    second = make_app()
    _register_child(second, later=True)
    _register_routed(second)
    clock.advance(3601)
    second.run_until_idle()
    view = second.get_task(t.task_id)
    assert view.status == "complete"
    statuses = {n: s.status for n, s in view.steps.items()}
    assert statuses == {
        "route": "complete", "fast": "complete", "slow": "skipped", "after_slow": "skipped",
        "join": "complete",
    }  # fmt: skip
    assert view.steps["route"].results == {"ids": list(view.children), "took": "express"}
    history = [h for h in second.history(t.task_id) if h.step is not None]
    reasons = {(h.step, h.to_status): h.reason for h in history}
    assert reasons[("route", "in_progress")].endswith("waiting for 2; decided: express")
    assert reasons[("route", "complete")] == "all 2 sub-task(s) done; decided: express"
    assert "branch 'standard' not taken (decision of step 'route')" in reasons[("slow", "skipped")]
    assert "below branch 'standard'" in reasons[("after_slow", "skipped")]


def test_a_decision_step_retried_after_a_failed_child_applies_its_new_decision(backend):
    """Given a decision step that chose "express" and awaits a child that fails for good,
    When the child is fixed, the step told to take "standard" and the task retried, Then
    the decision of the attempt that completed it applies: "fast" is skipped."""
    _register_child(backend, fail=True)
    _register_routed(backend, retry_limit=1)
    t = backend.enqueue(TaskRequest(name="routed"))
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    assert view.steps["route"].status == "error"
    assert view.steps["fast"].status == view.steps["slow"].status == "pending"
    for child in view.children:
        backend.update_step(child, "work", inputs={"fixed": True})
    backend.update_step(t.task_id, "route", inputs={"take": "standard"})
    backend.retry(t.task_id)
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    assert view.status == "complete"
    statuses = {n: s.status for n, s in view.steps.items()}
    assert statuses == {
        "route": "complete", "fast": "skipped", "slow": "complete", "after_slow": "complete",
        "join": "complete",
    }  # fmt: skip
    assert view.steps["route"].results["took"] == "standard"


def test_a_decision_step_that_spawns_and_chooses_an_unknown_branch_spawns_nothing(backend):
    """Given a decision step that spawns 2 children and then chooses a label it has no
    branch for, When run, Then the attempt fails with NoDecisionError naming the label,
    no child exists and no branch is skipped."""
    _register_child(backend)
    _register_routed(backend, take="sideways", retry_limit=1)
    t = backend.enqueue(TaskRequest(name="routed"))
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    assert view.status == "error"
    error = view.steps["route"].error
    assert error["error_class"].endswith("NoDecisionError") and "sideways" in error["message"]
    assert list(view.children) == [] and backend.list_tasks(name="child") == []
    assert all(view.steps[n].status == "pending" for n in ("fast", "slow", "after_slow", "join"))
