"""Waits, flow control from a handler, and pausing, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from integration_support import task_class

from tasker import StepTemplate, TaskRequest, testing
from tasker.core.clock import as_utc
from tasker.errors import InvalidStateError, PermanentError, SpeedrunError


def _ok(task, sequence, step):  # type: ignore[no-untyped-def]
    return {"ok": True}


def test_a_new_task_shows_its_steps_waiting_for_dependencies_with_stable_keys(backend):
    """Given a chain of two steps, When enqueued, Then the second waits for dependencies,
    none has reattempted, and each step has its own idempotency key, the same on every read."""
    backend.register(
        task_class(
            "chain",
            [
                StepTemplate(name="a", handler=_ok),
                StepTemplate(name="b", handler=_ok, depends_on=["a"]),
            ],
        )
    )
    t = backend.enqueue(TaskRequest(name="chain"))
    view = backend.get_task(t.task_id)
    assert [view.steps[n].waiting_for for n in "ab"] == [None, "dependencies"]
    assert [view.steps[n].reattempts for n in "ab"] == [0, 0]
    keys = {view.steps[n].idempotency_key for n in "ab"}
    assert len(keys) == 2
    backend.run_until_idle()
    done = backend.get_task(t.task_id)
    assert done.status == "complete"
    assert {done.steps[n].idempotency_key for n in "ab"} == keys
    assert [done.steps[n].waiting_for for n in "ab"] == [None, None]


def _tasks_row(app, task_id):  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    from tasker.store import schema as m

    with app.db.read() as conn:
        return conn.execute(sa.select(m.tasks).where(m.tasks.c.task_id == task_id)).one()


def test_a_waiting_task_holds_no_lease_and_a_restarted_app_runs_it_when_due(make_app, clock):
    """Given a step that waits 2 days after its dependency, When the first step ran, Then the
    task holds no lease and is due at the wait's end; a new app on the same database (a
    restart) does not run it early, and runs it once the clock passes the due time."""
    ran: list[str] = []

    def rec(task, sequence, step):  # type: ignore[no-untyped-def]
        ran.append(step.name)

    steps = [
        StepTemplate(name="welcome", handler=rec),
        StepTemplate(name="remind", handler=rec, depends_on=["welcome"], wait=timedelta(days=2)),
    ]
    first = make_app()
    first.register(task_class("journey", steps))
    t = first.enqueue(TaskRequest(name="journey"))
    first.run_until_idle()
    due = clock() + timedelta(days=2)
    row = _tasks_row(first, t.task_id)
    assert row.lease_owner is None
    assert row.next_run_at is not None and as_utc(row.next_run_at) == due
    assert first.get_task(t.task_id).steps["remind"].next_attempt_at == due
    first.close()
    second = make_app()
    second.register(task_class("journey", steps))
    clock.advance(2 * 86400 - 1)
    second.run_until_idle()
    assert ran == ["welcome"]
    clock.advance(2)
    second.run_until_idle()
    assert ran == ["welcome", "remind"]
    assert second.get_task(t.task_id).status == "complete"


def test_pause_waits_for_a_running_sibling_then_resume_runs_the_step_again(backend, clock):
    """Given two parallel steps, one pausing the task while the other still runs, Then the
    sibling's outcome is recorded, the task is paused (nothing starts, even much later), and
    resume runs the paused step again; the pause and its reason are in the history."""
    release = threading.Event()
    calls: list[str] = []

    def slow(task, sequence, step):  # type: ignore[no-untyped-def]
        release.wait(10)
        calls.append("slow")
        return {"slow": True}

    def pauser(task, sequence, step):  # type: ignore[no-untyped-def]
        calls.append("pauser")
        if calls.count("pauser") == 1:
            release.set()
            task.pause(reason="a person must look")
        return {"ok": True}

    steps = [
        StepTemplate(name="slow", handler=slow),
        StepTemplate(name="pauser", handler=pauser),
        StepTemplate(name="end", handler=_ok, depends_on=["slow", "pauser"]),
    ]
    backend.register(task_class("pausing", steps))
    t = backend.enqueue(TaskRequest(name="pausing"))
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    assert view.status == "paused"
    assert view.steps["slow"].status == "complete"
    assert view.steps["pauser"].status == "pending"
    assert view.steps["pauser"].attempts == 0
    assert view.steps["end"].waiting_for == "paused"
    clock.advance(86400)
    backend.run_until_idle()
    assert backend.get_task(t.task_id).status == "paused"
    backend.resume(t.task_id)
    backend.run_until_idle()
    done = backend.get_task(t.task_id)
    assert done.status == "complete"
    assert calls.count("pauser") == 2
    reasons = [h.reason for h in backend.history(t.task_id) if h.to_status == "paused"]
    assert reasons and "a person must look" in reasons[0]
    with pytest.raises(InvalidStateError):
        backend.resume(t.task_id)


def test_cancel_from_a_handler_cancels_running_siblings_and_pending_steps(backend):
    """Given a step that cancels the task while a sibling runs, Then the task, the sibling
    and the pending steps are cancelled, and the sibling's late result is not recorded."""
    release = threading.Event()

    def slow(task, sequence, step):  # type: ignore[no-untyped-def]
        release.wait(10)
        return {"late": True}

    def canceller(task, sequence, step):  # type: ignore[no-untyped-def]
        task.cancel(reason="account closed")

    def release_once_cancelled() -> None:  # the sibling ends only after the cancel committed
        while backend.get_task(t.task_id).status != "cancelled":
            time.sleep(0.01)
        release.set()

    steps = [
        StepTemplate(name="slow", handler=slow),
        StepTemplate(name="canceller", handler=canceller),
        StepTemplate(name="end", handler=_ok, depends_on=["slow", "canceller"]),
    ]
    backend.register(task_class("cancelling", steps))
    t = backend.enqueue(TaskRequest(name="cancelling"))
    watcher = threading.Thread(target=release_once_cancelled, daemon=True)
    watcher.start()
    backend.run_until_idle()
    watcher.join(10)
    view = backend.get_task(t.task_id)
    assert view.status == "cancelled"
    assert view.completed_at is not None
    assert {n: s.status for n, s in view.steps.items()} == dict.fromkeys(
        ["slow", "canceller", "end"], "cancelled"
    )
    assert view.steps["slow"].results is None
    assert "account closed" in [h for h in backend.history(t.task_id) if h.step is None][-1].reason


def test_reattempts_never_use_the_retry_budget(backend, clock):
    """Given a step with one attempt (retryable=False) that reattempts three times, Then it
    completes: reattempts are counted apart, attempts stay 1."""
    calls: list[int] = []

    def poll(task, sequence, step):  # type: ignore[no-untyped-def]
        calls.append(step.attempts)
        if len(calls) < 4:
            step.reattempt(60)
        return {"polls": len(calls)}

    backend.register(task_class("poll", [StepTemplate(name="p", handler=poll, retryable=False)]))
    t = backend.enqueue(TaskRequest(name="poll"))
    for _ in range(5):
        backend.run_until_idle()
        clock.advance(61)
    step = backend.get_task(t.task_id).steps["p"]
    assert (step.status, step.attempts, step.reattempts) == ("complete", 1, 3)
    assert calls == [1, 1, 1, 1]


def test_speedrun_drives_a_task_through_its_waits_and_stops_at_a_pause(backend, clock):
    """Given a wait of 3 days then a step that pauses, When speedrun, Then the clock moved
    past the wait and the task is returned paused; a task that polls forever raises
    SpeedrunError past max_steps."""
    start = clock()

    def pause(task, sequence, step):  # type: ignore[no-untyped-def]
        task.pause(reason="review")

    steps = [
        StepTemplate(name="a", handler=_ok, wait=timedelta(days=3)),
        StepTemplate(name="b", handler=pause, depends_on=["a"]),
    ]
    backend.register(task_class("speedy", steps))
    t = backend.enqueue(TaskRequest(name="speedy"))
    view = testing.speedrun(backend, t.task_id)
    assert view.status == "paused"
    assert clock() >= start + timedelta(days=3)

    def forever(task, sequence, step):  # type: ignore[no-untyped-def]
        step.reattempt(60)

    backend.register(task_class("forever", [StepTemplate(name="p", handler=forever)]))
    f = backend.enqueue(TaskRequest(name="forever"))
    with pytest.raises(SpeedrunError, match="max_steps=5"):
        testing.speedrun(backend, f.task_id, max_steps=5)


def _broken(task, sequence, step):  # type: ignore[no-untyped-def]
    raise PermanentError(f"{step.name} is broken")


@pytest.mark.parametrize(
    ("on_failure", "task_status", "step_status", "next_status"),
    [
        ("error", "error", "error", "pending"),
        ("skip", "complete", "skipped", "complete"),
        ("cancel", "cancelled", "cancelled", "cancelled"),
        ("pause", "paused", "error", "pending"),
    ],
)
def test_on_failure_says_what_a_step_with_no_attempt_left_does(
    backend, on_failure, task_status, step_status, next_status
):
    """Given a step that fails for good with each on_failure, Then the task's, the step's and
    its dependent's statuses; the error is kept on the failed step."""
    steps = [
        StepTemplate(name="a", handler=_broken, on_failure=on_failure),
        StepTemplate(name="b", handler=_ok, depends_on=["a"]),
    ]
    backend.register(task_class(f"fails_{on_failure}", steps))
    t = backend.enqueue(TaskRequest(name=f"fails_{on_failure}"))
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    assert (view.status, view.steps["a"].status, view.steps["b"].status) == (
        task_status,
        step_status,
        next_status,
    )
    assert view.steps["a"].error is not None
    assert view.steps["a"].error["message"] == "a is broken"


def test_a_paused_task_stays_paused_when_a_step_is_cancelled_and_goes_on_on_resolve(backend):
    """Given a task paused by on_failure, When a person cancels another step, Then it stays
    paused; When the failed step is resolved by hand, Then the task goes on and completes."""
    steps = [
        StepTemplate(name="a", handler=_broken, on_failure="pause"),
        StepTemplate(name="side", handler=_ok, depends_on=["a"]),
        StepTemplate(name="b", handler=_ok, depends_on=["a"]),
    ]
    backend.register(task_class("held", steps))
    t = backend.enqueue(TaskRequest(name="held"))
    backend.run_until_idle()
    backend.cancel_step(t.task_id, "side")
    backend.run_until_idle()
    assert backend.get_task(t.task_id).status == "paused"
    backend.resolve_step(t.task_id, "a", {"by": "hand"})
    backend.run_until_idle()
    view = backend.get_task(t.task_id)
    assert (view.steps["b"].status, view.steps["side"].status) == ("complete", "cancelled")
    assert view.status == "error"  # a cancelled step is not done: cancel_step's rule


def _pauses(task, sequence, step):  # type: ignore[no-untyped-def]
    task.pause(reason="a person looks")


@pytest.mark.parametrize(
    ("how", "held_status"), [("task.pause", "pending"), ("on_failure", "error")]
)
def test_cancel_of_a_paused_task_cancels_it_and_its_unfinished_steps(
    backend, clock, how, held_status
):
    """Given a task paused by its middle step (by task.pause, or by on_failure="pause"), its
    first step complete and its last one pending, When a person cancels it, Then the task is
    cancelled at that moment, the held and the pending steps are cancelled, the complete one
    stays complete, each change is in the history, on_finish sees it cancelled, nothing runs
    afterwards, and resume is refused."""
    ran: list[str] = []
    seen: list[str] = []

    def last(task, sequence, step):  # type: ignore[no-untyped-def]
        ran.append("last")

    if how == "task.pause":
        middle = StepTemplate(name="middle", handler=_pauses, depends_on=["first"])
    else:
        middle = StepTemplate(
            name="middle", handler=_broken, depends_on=["first"], on_failure="pause"
        )
    steps = [
        StepTemplate(name="first", handler=_ok),
        middle,
        StepTemplate(name="last", handler=last, depends_on=["middle"]),
    ]
    handler = task_class("held_then_cancelled", steps)
    handler.on_finish = lambda self, task: seen.append(task.status)  # type: ignore[attr-defined]
    backend.register(handler)
    t = backend.enqueue(TaskRequest(name="held_then_cancelled"))
    backend.run_until_idle()
    paused = backend.get_task(t.task_id)
    assert paused.status == "paused"
    assert [paused.steps[n].status for n in ("first", "middle", "last")] == [
        "complete",
        held_status,
        "pending",
    ]
    clock.advance(60)

    view = backend.cancel(t.task_id)

    assert view.status == "cancelled"
    assert view.completed_at == clock()
    assert [view.steps[n].status for n in ("first", "middle", "last")] == [
        "complete",
        "cancelled",
        "cancelled",
    ]
    history = backend.history(t.task_id)
    task_rows = [(h.from_status, h.to_status) for h in history if h.step is None]
    assert ("in_progress", "paused") in task_rows
    assert task_rows[task_rows.index(("in_progress", "paused")) + 1] == ("paused", "cancelled")
    step_rows = {(h.step, h.from_status, h.to_status) for h in history if h.step is not None}
    assert ("middle", held_status, "cancelled") in step_rows
    assert ("last", "pending", "cancelled") in step_rows
    assert ("first", "complete", "cancelled") not in step_rows
    backend.run_until_idle()
    assert seen == ["cancelled"]
    assert ran == []
    assert backend.get_task(t.task_id).status == "cancelled"
    with pytest.raises(InvalidStateError):
        backend.resume(t.task_id)


def test_run_if_and_cancel_if_are_recorded_with_their_reasons(backend):
    """Given a step whose run_if is False and a task whose cancel_if is True, Then the step
    is skipped and the other task cancelled, each with its reason in the history."""
    steps = [
        StepTemplate(name="gate", handler=_ok, run_if=lambda task, seq: task.context["go"]),
        StepTemplate(name="after", handler=_ok, depends_on=["gate"]),
    ]
    handler = task_class("conditional", steps)
    handler.cancel_if = lambda self, task, seq: task.context.get("stop", False)  # type: ignore[attr-defined]
    backend.register(handler)
    skipped = backend.enqueue(TaskRequest(name="conditional", context={"go": False}))
    stopped = backend.enqueue(TaskRequest(name="conditional", context={"go": True, "stop": True}))
    backend.run_until_idle()
    view = backend.get_task(skipped.task_id)
    assert (view.status, view.steps["gate"].status) == ("complete", "skipped")
    assert view.steps["gate"].attempts == 0
    assert any("run_if" in h.reason for h in backend.history(skipped.task_id))
    assert backend.get_task(stopped.task_id).status == "cancelled"
    last = [h for h in backend.history(stopped.task_id) if h.step is None][-1]
    assert "cancel_if" in last.reason


def test_retry_lets_a_task_paused_by_a_handler_go_on(backend):
    """Given a task paused by task.pause() (no step failed), When retried, Then it goes on."""
    calls: list[int] = []

    def once(task, sequence, step):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            task.pause()
        return {}

    backend.register(task_class("pause_once", [StepTemplate(name="s", handler=once)]))
    t = backend.enqueue(TaskRequest(name="pause_once"))
    backend.run_until_idle()
    assert backend.get_task(t.task_id).status == "paused"
    backend.retry(t.task_id)
    backend.run_until_idle()
    assert backend.get_task(t.task_id).status == "complete"
    assert len(calls) == 2


def test_resume_after_the_reattempt_limit_gives_a_fresh_reattempt_budget(backend, clock):
    """Given a polling step that hit max_reattempts with on_failure=pause, When resumed,
    Then it may reattempt again up to the limit before it pauses the task again."""
    calls: list[int] = []

    def poll(task, sequence, step):  # type: ignore[no-untyped-def]
        calls.append(step.reattempts)
        step.reattempt(10)

    steps = [StepTemplate(name="p", handler=poll, max_reattempts=1, on_failure="pause")]
    backend.register(task_class("limited", steps))
    t = backend.enqueue(TaskRequest(name="limited"))
    for _ in range(3):
        backend.run_until_idle()
        clock.advance(11)
    view = backend.get_task(t.task_id)
    assert view.status == "paused" and view.steps["p"].status == "error"
    assert calls == [0, 1]
    backend.resume(t.task_id)
    for _ in range(3):
        backend.run_until_idle()
        clock.advance(11)
    assert calls == [0, 1, 0, 1]
    assert backend.get_task(t.task_id).status == "paused"
