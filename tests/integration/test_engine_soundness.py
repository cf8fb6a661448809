"""Engine soundness (issue 8): the corners where a guarantee used not to hold.

On SQLite and PostgreSQL. Each test reads Given / When / Then. Tests that need time to
pass use the real clock (`real_app`), never a timing assertion.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from integration_support import check_history, task_class
from sqlalchemy.exc import OperationalError

from tasker import StepTemplate, Tasker, TaskRequest, errors


@pytest.fixture
def real_app(backend_url: str, clean_env: None) -> Iterator[Callable[..., Tasker]]:
    """Make migrated apps on the real clock (with extra settings); all closed after."""
    apps: list[Tasker] = []

    def make(**settings: Any) -> Tasker:
        app = Tasker(database_url=backend_url, **settings)
        apps.append(app)
        app.migrate()
        return app

    yield make
    for app in reversed(apps):
        app.close()


def _in_background(fn: Callable[[], Any]) -> threading.Thread:
    runner = threading.Thread(target=fn, daemon=True)
    runner.start()
    return runner


# -- defect 1: a retry does not wait behind a running sibling --------------------------


def test_a_retry_starts_at_its_due_time_while_a_sibling_still_runs(real_app, release):
    """Given step `flaky` asking for a retry after 1 s while sibling `slow` runs on until
    it sees flaky's second attempt (or gives up after 20 s),
    when the task runs, then the second attempt starts while slow still runs, and not
    before its due time."""
    app = real_app()
    second = threading.Event()

    def flaky(task, sequence, step):
        if step.attempts == 1:
            raise errors.RetryableError("rate limited", retry_after=1)
        second.set()
        return {"attempt": step.attempts}

    def slow(task, sequence, step):
        return {"saw_retry": second.wait(20)}

    app.register(
        task_class(
            "retry_beside_slow",
            [
                StepTemplate(name="slow", handler=slow, timeout=60),
                StepTemplate(name="flaky", handler=flaky, retry_limit=2),
            ],
        )
    )
    task = app.enqueue(TaskRequest(name="retry_beside_slow"))
    app.run_until_idle()

    done = app.get_task(task.task_id)
    assert done.status == "complete"
    assert done.steps["slow"].results == {"saw_retry": True}
    assert done.steps["flaky"].results == {"attempt": 2}
    chains = check_history(app, task.task_id)
    failed_at = next(t.created_at for t in chains["flaky"] if t.to_status == "error")
    retried_at = [t.created_at for t in chains["flaky"] if t.to_status == "in_progress"][1]
    assert retried_at - failed_at >= timedelta(seconds=1)


# -- defect 3: stop() then run_until_idle() never spins ---------------------------------


def test_run_until_idle_after_stop_runs_the_work(backend):
    """Given an app whose background worker was started and stopped,
    when run_until_idle() is called with a task waiting, then it runs the task to its
    end and returns (it does not hand the task back to itself for ever)."""
    backend.register(task_class("after_stop", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    backend.start(threads=1, sweep=False)
    backend.stop()
    task = backend.enqueue(TaskRequest(name="after_stop"))
    runner = _in_background(backend.run_until_idle)
    runner.join(20)
    assert not runner.is_alive(), "run_until_idle() spins after stop()"
    assert backend.get_task(task.task_id).status == "complete"


def test_a_stop_during_run_until_idle_makes_it_return_with_the_task_handed_back(backend):
    """Given a step that stops the app's engine while it runs (as a worker's stop would),
    when run_until_idle() runs the task, then it returns with the task handed back
    (not spinning on it), and a later run_until_idle() finishes the task."""
    calls = []

    def stops(task, sequence, step):
        calls.append(step.name)
        backend.engine.stop()
        return {}

    backend.register(
        task_class(
            "stopped_midway",
            [
                StepTemplate(name="first", handler=stops),
                StepTemplate(name="second", handler=lambda t, q, s: {}, depends_on=["first"]),
            ],
        )
    )
    task = backend.enqueue(TaskRequest(name="stopped_midway"))
    runner = _in_background(backend.run_until_idle)
    runner.join(20)
    assert not runner.is_alive(), "run_until_idle() spins on a task handed back by a stop"
    held = backend.get_task(task.task_id)
    assert (held.steps["first"].status, held.steps["second"].status) == ("complete", "pending")

    backend.run_until_idle()
    assert backend.get_task(task.task_id).status == "complete"
    assert calls == ["first"]


# -- defect 4: what a handler gets is its own to mutate --------------------------------


def test_a_handler_mutating_what_it_gets_changes_nothing_another_step_sees(backend):
    """Given two concurrent siblings after a root, the first mutating the task context,
    its inputs, the root's results (via the sequence) and its own error of before, and
    update_annotations mutating the steps it gets,
    when the task runs, then the second sibling (running meanwhile) and the join (later)
    see the context and results as stored, and what is stored is unchanged."""
    context = {"order": {"items": [1, 2]}, "note": "as sent"}
    mutated = threading.Event()
    seen: dict[str, Any] = {}

    def root(task, sequence, step):
        return {"total": {"value": 3}, "list": [1]}

    def mutates(task, sequence, step):
        task.context["note"] = "changed"
        task.context["order"]["items"].append(99)
        step.inputs["order"]["items"].clear()
        sequence["root"].results["total"]["value"] = -1
        sequence["root"].results["list"].append(2)
        mutated.set()
        return {"mine": [1]}

    def reads(task, sequence, step):
        assert mutated.wait(10)
        seen["sibling"] = (task.context, step.inputs, sequence["root"].results)
        return {}

    def join(task, sequence, step):
        seen["join"] = (task.context, step.inputs, sequence["root"].results)
        return {}

    def annotate(self, task, sequence, steps):
        task.context["note"] = "changed by update_annotations"
        for s in steps:
            if isinstance(s.results, dict):
                s.results["mutated_by_annotations"] = True

    backend.register(
        task_class(
            "mutating",
            [
                StepTemplate(name="root", handler=root),
                StepTemplate(name="mutates", handler=mutates, depends_on=["root"]),
                StepTemplate(name="reads", handler=reads, depends_on=["root"]),
                StepTemplate(name="join", handler=join, depends_on=["mutates", "reads"]),
            ],
            annotate=annotate,
        )
    )
    task = backend.enqueue(TaskRequest(name="mutating", context=context))
    backend.run_until_idle()

    done = backend.get_task(task.task_id)
    assert done.status == "complete", {n: s.error for n, s in done.steps.items()}
    expected = (context, context, {"total": {"value": 3}, "list": [1]})
    assert seen["sibling"] == expected
    assert seen["join"] == expected
    assert done.context == context
    assert done.steps["root"].results == {"total": {"value": 3}, "list": [1]}
    assert done.steps["mutates"].results == {"mine": [1]}


# -- defect 10: every datetime a handler sees is aware UTC ------------------------------


def test_every_datetime_a_handler_sees_is_aware_utc(backend_url, clock, clean_env, monkeypatch):
    """Given a PostgreSQL session in UTC+05:30 (PGTZ) and a request time in UTC-03:00,
    when the task's steps and update_annotations run, then task.requested_at and every
    datetime of the steps they read is aware UTC, the same instant as requested."""
    from datetime import datetime, timezone

    from integration_support import assert_utc

    monkeypatch.setenv("PGTZ", "Asia/Kolkata")
    app = Tasker(database_url=backend_url, clock=clock)
    try:
        app.migrate()
        seen: list[datetime | None] = []

        def record(task, sequence):
            seen.append(task.requested_at)
            for view in sequence:
                seen.extend((view.last_attempted_at, view.next_attempt_at, view.processed_at))

        def step(task, sequence, step):
            record(task, sequence)
            return {}

        def annotate(self, task, sequence, steps):
            record(task, sequence)

        app.register(
            task_class(
                "times_seen",
                [
                    StepTemplate(name="a", handler=step),
                    StepTemplate(name="b", handler=step, depends_on=["a"]),
                ],
                annotate=annotate,
            )
        )
        asked = datetime(2024, 5, 1, 17, 0, tzinfo=timezone(timedelta(hours=-3)))
        task = app.enqueue(TaskRequest(name="times_seen", requested_at=asked))
        app.run_until_idle()

        assert app.get_task(task.task_id).status == "complete"
        assert asked in seen
        for value in seen:
            assert_utc(value)
    finally:
        app.close()


# -- defect 6: database errors and a hanging update_annotations do not stall the pass ---


def _down(times: int, real: Callable[..., Any]) -> Callable[..., Any]:
    """`real`, failing with an OperationalError (a database that is away) `times` times."""
    left = [times]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return real(*args, **kwargs)

    flaky.left = left  # type: ignore[attr-defined]
    return flaky


def test_a_database_error_recording_annotations_is_retried(backend):
    """Given a step that annotates and a database that fails the first two times the
    annotation type is looked up, when the task runs, then the look-up is retried and
    the task completes with its annotation in the same pass."""
    backend.register(
        task_class(
            "annotates",
            [StepTemplate(name="s", handler=lambda t, q, s: t.annotate("note", {"k": 1}))],
        )
    )
    flaky = _down(2, backend.catalog.annotation_type_id)
    backend.catalog.annotation_type_id = flaky  # type: ignore[method-assign]
    task = backend.enqueue(TaskRequest(name="annotates"))
    runner = _in_background(backend.run_until_idle)
    runner.join(20)

    assert not runner.is_alive(), "the pass stalls on the database error"
    assert flaky.left == [0]
    assert backend.get_task(task.task_id).status == "complete"
    assert [a.annotation for a in backend.annotations("note")] == [{"k": 1}]


def test_reading_the_steps_again_after_a_steering_call_is_retried(backend, release):
    """Given a pass running a slow step while a sibling failed for good, and a database
    that fails the first two reads of the steps, when the failed step is resolved by hand
    meanwhile, then the pass's read of the steered steps is retried and the task completes."""
    from tasker.engine import pass_io

    started = threading.Event()

    def slow(task, sequence, step):
        started.set()
        release.wait(30)
        return {}

    def doomed(task, sequence, step):
        raise errors.PermanentError("down")

    backend.register(
        task_class(
            "steered_flaky",
            [
                StepTemplate(name="slow", handler=slow),
                StepTemplate(name="doomed", handler=doomed),
                StepTemplate(name="after", handler=lambda t, q, s: {}, depends_on=["doomed"]),
            ],
        )
    )
    flaky = _down(2, pass_io.read_steps)
    task = backend.enqueue(TaskRequest(name="steered_flaky"))
    runner = _in_background(backend.run_until_idle)
    try:
        assert started.wait(10)
        _wait_for(lambda: backend.get_task(task.task_id).steps["doomed"].status == "error")
        with mock.patch.object(pass_io, "read_steps", flaky):
            backend.resolve_step(task.task_id, "doomed", results={"by": "ops"})
            release.set()
            runner.join(30)
    finally:
        release.set()
        runner.join(30)
    assert flaky.left == [0]
    done = backend.get_task(task.task_id)
    assert done.status == "complete"
    assert done.steps["after"].status == "complete"


def test_a_hanging_update_annotations_is_cut_at_its_time_limit(make_app, release):
    """Given step_timeout=0.5 and an update_annotations that hangs the first time,
    when the task runs, then the hang is recorded as an update_annotations_error
    (StepTimeoutError) and the task completes while update_annotations still hangs."""
    app = make_app(step_timeout=0.5)
    calls = []

    def annotate(self, task, sequence, steps):
        calls.append([s.name for s in steps])
        if len(calls) == 1:
            release.wait(30)

    app.register(
        task_class(
            "slow_annotations",
            [
                StepTemplate(name="a", handler=lambda t, q, s: {}, timeout=10),
                StepTemplate(name="b", handler=lambda t, q, s: {}, depends_on=["a"], timeout=10),
            ],
            annotate=annotate,
        )
    )
    task = app.enqueue(TaskRequest(name="slow_annotations"))
    runner = _in_background(app.run_until_idle)
    runner.join(20)
    try:
        assert not runner.is_alive(), "the pass waits for update_annotations"
        assert app.get_task(task.task_id).status == "complete"
        (error,) = app.annotations("tasker.update_annotations_error")
        assert error.annotation["error_class"].endswith("StepTimeoutError")
        assert "time limit of 0.5 s" in error.annotation["message"]
        assert calls == [["a"], ["b"]]
    finally:
        release.set()


def _wait_for(predicate: Callable[[], bool], seconds: float = 30) -> None:
    done = threading.Event()
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        done.wait(0.05)
    raise AssertionError("the condition never came true")


# -- defect 7: a lease that cannot be kept while an attempt runs fail-stops -------------


@pytest.mark.parametrize("past_time_limit", [False, True])
def test_a_lease_that_cannot_be_renewed_while_a_step_runs_ends_its_attempts_first(
    real_app, past_time_limit
):
    """Given a worker running a long step of a task (lease 3 s) when the database stops
    taking its writes (the attempt within its time limit, or past it with its time-out
    recorded and its thread running on), and a second worker,
    when the lease cannot be renewed, then the first worker fail-stops (here: its attempt
    is ended, as ending the process would) while the lease is still its own, and only
    after the lease expired does the second worker run the step again: the two attempts
    never overlap, and the task completes."""
    import sqlalchemy as sa

    from tasker.core.clock import as_utc, utc_now
    from tasker.store import schema as m

    old = real_app(lease_seconds=3, backoff_base=0)
    new = real_app(lease_seconds=3, backoff_base=0)
    lock = threading.Lock()
    active, peak = [0], [0]
    started, killed = threading.Event(), threading.Event()
    stops: list[tuple[str, bool]] = []

    def long_step(task, sequence, step):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            if step.attempts == 1:
                started.set()
                killed.wait(30)  # the first worker's attempt: it ends when its process does
            return {"attempt": step.attempts}
        finally:
            with lock:
                active[0] -= 1

    def lease_expires() -> Any:
        with new.db.read() as conn:
            value = conn.execute(sa.select(m.tasks.c.lease_expires_at)).scalar_one()
        return None if value is None else as_utc(value)

    def fail_stop(task_id: int, why: str) -> None:
        expires = lease_expires()
        stops.append((why, expires is not None and expires > utc_now()))
        killed.set()  # what ending the process does to its step threads

    limit = 0.5 if past_time_limit else 60
    cls = task_class(
        "outlived", [StepTemplate(name="s", handler=long_step, retry_limit=2, timeout=limit)]
    )
    old.register(cls)
    new.register(cls)
    old.engine.fail_stop = fail_stop
    task = old.enqueue(TaskRequest(name="outlived"))
    runner = _in_background(old.run_until_idle)
    try:
        assert started.wait(10)
        if past_time_limit:
            _wait_for(lambda: old.get_task(task.task_id).steps["s"].status == "error")
        down = OperationalError("UPDATE tasks", {}, Exception("the database is away"))
        with mock.patch.object(old.store, "apply", side_effect=down):
            _wait_for(lambda: bool(stops), 20)
            runner.join(30)
        _wait_for(lambda: (lease_expires() or utc_now()) < utc_now())
        for _ in range(20):
            new.run_until_idle()
            if new.get_task(task.task_id).status == "complete":
                break
            killed.wait(0.2)
    finally:
        killed.set()
        runner.join(30)

    (why, lease_still_ours), *_ = stops
    assert lease_still_ours, "the first worker fail-stopped only after its lease had expired"
    assert "renewed" in why and "s" in why
    assert peak[0] == 1, "the second worker ran the step while the first attempt still ran"
    done = new.get_task(task.task_id)
    assert done.status == "complete"
    assert (done.steps["s"].attempts, done.steps["s"].results) == (2, {"attempt": 2})
    check_history(new, task.task_id)


# -- defect 2: steering while a timed-out attempt's thread still runs ------------------


def _tx_seq(app: Tasker, task_id: int) -> int:
    import sqlalchemy as sa

    from tasker.store import schema as m

    with app.db.read() as conn:
        return int(
            conn.execute(
                sa.select(m.tasks.c.tx_seq).where(m.tasks.c.task_id == task_id)
            ).scalar_one()
        )


def _steer(app: Tasker, how: str, task_id: int) -> None:
    if how == "resolve":
        app.resolve_step(task_id, "stuck", results={"by": "ops"})
    elif how == "retry":
        app.retry(task_id)
    else:
        app.cancel(task_id)


@pytest.mark.parametrize(
    ("how", "attempts", "status", "stuck_status", "calls"),
    [
        ("resolve", 2, "complete", "resolved_manually", [1]),
        ("resolve", 1, "complete", "resolved_manually", [1]),
        ("retry", 1, "complete", "complete", [1, 1]),
        ("cancel", 2, "cancelled", "cancelled", [1]),
        ("cancel", 1, "cancelled", "cancelled", [1]),
    ],
)
def test_steering_while_a_timed_out_attempt_still_runs_is_never_written_over(
    make_app, clock, release, how, attempts, status, stuck_status, calls
):
    """Given a step whose first attempt ran past its 0.5 s time limit (recorded) while its
    thread runs on, with or without attempts left, and a sibling that completed,
    when it is resolved, retried or cancelled, the pass then renews its lease (re-reading
    the steered steps) and the retry falls due, and only then the thread ends,
    then the steered state stands: a resolved step is not run again and the task
    completes, a retried step runs again and completes, a cancelled task stays so."""
    app = make_app(lease_seconds=1.5)
    seen: list[int] = []

    def stuck(task, sequence, step):
        seen.append(step.attempts)
        if len(seen) == 1:
            release.wait(30)
        return {"attempt": step.attempts}

    app.register(
        task_class(
            "abandoned",
            [
                StepTemplate(name="stuck", handler=stuck, timeout=0.5, retry_limit=attempts),
                StepTemplate(name="sibling", handler=lambda t, q, s: {}),
            ],
        )
    )
    task = app.enqueue(TaskRequest(name="abandoned"))
    runner = _in_background(app.run_until_idle)
    try:
        _wait_for(lambda: app.get_task(task.task_id).steps["stuck"].status == "error")
        _steer(app, how, task.task_id)
        steered = _tx_seq(app, task.task_id)
        if how != "cancel":  # a cancelled task's lease is gone: the pass writes nothing more
            _wait_for(lambda: _tx_seq(app, task.task_id) > steered)  # the pass re-read it
        clock.advance(app.settings.backoff_max + 1)  # any retry is due now
    finally:
        release.set()
        runner.join(30)
    assert not runner.is_alive()
    app.run_until_idle()

    done = app.get_task(task.task_id)
    assert (done.status, done.steps["stuck"].status) == (status, stuck_status)
    assert seen == calls
    check_history(app, task.task_id)


@pytest.mark.parametrize("how", ["resolve", "retry", "cancel"])
def test_steering_a_step_before_its_time_out_is_recorded(make_app, clock, release, how):
    """Given a step still running within its 1 s time limit,
    when it is resolved or retried, then the call is refused (the step is running);
    when the task is cancelled, then the time-out recorded later does not undo it."""
    app = make_app(lease_seconds=1.5)
    started = threading.Event()
    seen: list[int] = []

    def stuck(task, sequence, step):
        seen.append(step.attempts)
        started.set()
        release.wait(30)
        return {}

    app.register(
        task_class("running", [StepTemplate(name="stuck", handler=stuck, timeout=1, retry_limit=2)])
    )
    task = app.enqueue(TaskRequest(name="running"))
    runner = _in_background(app.run_until_idle)
    try:
        assert started.wait(10)
        if how == "cancel":
            app.cancel(task.task_id)
        else:
            with pytest.raises(errors.InvalidTransitionError):
                _steer(app, how, task.task_id)
        if how != "cancel":  # the time-out is recorded while the thread runs on
            _wait_for(lambda: app.get_task(task.task_id).steps["stuck"].status == "error")
    finally:
        release.set()
        runner.join(30)
    clock.advance(app.settings.backoff_max + 1)
    app.run_until_idle()

    done = app.get_task(task.task_id)
    if how == "cancel":
        assert (done.status, done.steps["stuck"].status, seen) == ("cancelled", "cancelled", [1])
    else:
        assert (done.status, done.steps["stuck"].attempts, seen) == ("complete", 2, [1, 2])
    check_history(app, task.task_id)


@pytest.mark.parametrize(
    ("how", "stuck_status"), [("resolve", "resolved_manually"), ("retry", "complete")]
)
def test_steering_after_the_abandoned_thread_ended(make_app, clock, release, how, stuck_status):
    """Given a step that timed out on its only attempt and whose thread then ended (the
    task in error), when it is resolved or retried, then the task completes."""
    app = make_app(lease_seconds=1.5)
    seen: list[int] = []

    def stuck(task, sequence, step):
        seen.append(step.attempts)
        if len(seen) == 1:
            release.wait(2)
        return {}

    app.register(
        task_class("ended", [StepTemplate(name="stuck", handler=stuck, timeout=0.5, retry_limit=1)])
    )
    task = app.enqueue(TaskRequest(name="ended"))
    app.run_until_idle()
    assert app.get_task(task.task_id).status == "error"
    _steer(app, how, task.task_id)
    app.run_until_idle()

    done = app.get_task(task.task_id)
    assert (done.status, done.steps["stuck"].status) == ("complete", stuck_status)
    assert seen == ([1] if how == "resolve" else [1, 1])
    check_history(app, task.task_id)
