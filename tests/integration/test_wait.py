"""`app.wait(task_id, timeout)` and `tasker status ID --wait`."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from integration_support import task_class

from tasker import StepTemplate, Tasker, TaskRequest
from tasker.cli.main import main
from tasker.errors import InvalidRequestError, PermanentError, TaskNotFoundError
from tasker.store.triggers import DONE_CHANNEL


def register(app, gate: threading.Event | None = None):
    def step(task, sequence, s):
        if gate is not None:
            gate.wait(30)
        return {"ok": True}

    def fails(task, sequence, s):
        raise PermanentError("no")

    app.register(task_class("job", [StepTemplate(name="s", handler=step)]))
    app.register(task_class("bad", [StepTemplate(name="s", handler=fails)]))


def test_wait_returns_the_task_once_another_thread_has_finished_it(backend):
    """Given a task that a second thread runs (its step held until the wait has begun),
    when the caller waits for it, then wait returns the complete task with its results."""
    gate = threading.Event()
    register(backend, gate)
    task_id = backend.enqueue(TaskRequest(name="job")).task_id
    worker = threading.Thread(target=backend.run_until_idle)
    worker.start()
    try:
        with pytest.raises(TimeoutError, match=str(task_id)):
            backend.wait(task_id, timeout=0.05)
        gate.set()
        done = backend.wait(task_id, timeout=timedelta(seconds=30))
    finally:
        gate.set()
        worker.join()
    assert done.status == "complete"
    assert done.steps["s"].results == {"ok": True}


def test_wait_returns_a_task_in_error_and_a_cancelled_task(backend):
    """Given a task in error and a cancelled task, wait returns each at once."""
    register(backend)
    bad = backend.enqueue(TaskRequest(name="bad")).task_id
    backend.run_until_idle()
    assert backend.wait(bad, timeout=1).status == "error"
    pending = backend.enqueue(TaskRequest(name="job")).task_id
    backend.cancel(pending)
    assert backend.wait(pending).status == "cancelled"


def test_wait_returns_a_task_once_it_is_paused(backend, monkeypatch):
    """Given a task whose step pauses it once a gate opens, run by a second thread, and a
    fallback poll so slow (a minute) that on PostgreSQL only the notification can end the
    wait soon, When the caller waits before and after the gate opens, Then wait times out
    while the step is held and returns the paused task soon after; a second wait on the
    paused task returns at once."""
    from tasker.control import waiting

    monkeypatch.setattr(waiting, "_SAFETY_POLL", 60.0)
    gate = threading.Event()

    def pauses(task, sequence, s):
        gate.wait(30)
        task.pause(reason="a person looks")

    backend.register(task_class("pausing", [StepTemplate(name="s", handler=pauses)]))
    task_id = backend.enqueue(TaskRequest(name="pausing")).task_id
    worker = threading.Thread(target=backend.run_until_idle)
    worker.start()
    try:
        with pytest.raises(TimeoutError, match=str(task_id)):
            backend.wait(task_id, timeout=0.05)
        gate.set()
        began = time.monotonic()
        paused = backend.wait(task_id, timeout=30)
        took = time.monotonic() - began
    finally:
        gate.set()
        worker.join()
    assert paused.status == "paused"
    assert paused.steps["s"].status == "pending"
    assert took < 20, f"wait took {took:.1f} s to see the pause"
    assert backend.wait(task_id, timeout=0).status == "paused"


def test_wait_on_a_task_nobody_runs_times_out(backend):
    """Given a pending task and no worker, wait raises TimeoutError past its timeout;
    a timeout of zero looks once."""
    register(backend)
    task_id = backend.enqueue(TaskRequest(name="job")).task_id
    with pytest.raises(TimeoutError):
        backend.wait(task_id, timeout=0.2)
    with pytest.raises(TimeoutError):
        backend.wait(task_id, timeout=0)
    assert backend.get_task(task_id).status == "pending"


@pytest.mark.parametrize("timeout", [-1, "5", True])
def test_wait_with_a_bad_timeout_or_an_unknown_task_is_refused(backend, timeout):
    """Given a negative or non-numeric timeout, wait raises InvalidRequestError; an id
    that names no task raises TaskNotFoundError."""
    register(backend)
    task_id = backend.enqueue(TaskRequest(name="job")).task_id
    with pytest.raises(InvalidRequestError, match="timeout"):
        backend.wait(task_id, timeout=timeout)
    with pytest.raises(TaskNotFoundError):
        backend.wait(task_id + 1000, timeout=1)


def test_wait_works_with_a_worker_started_in_the_background(make_app):
    """Given an app whose worker runs in background threads (app.start), when a task is
    enqueued and waited for, then wait returns it complete."""
    app = make_app()
    register(app)
    app.start(threads=2)
    try:
        task_id = app.enqueue(TaskRequest(name="job")).task_id
        assert app.wait(task_id, timeout=60).status == "complete"
    finally:
        app.stop()


@pytest.mark.postgres
def test_postgres_notifies_when_a_task_stops_running_and_not_when_it_starts(
    pg_url, clock, clean_env
):
    """Given a session listening on tasker_task_done (PostgreSQL), when a task is claimed
    and completed and another is cancelled, then exactly the two endings are announced,
    each with its task id."""
    app = Tasker(database_url=pg_url, clock=clock)
    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        app.migrate()
        register(app)
        with engine.connect() as conn:
            driver = conn.connection.driver_connection
            driver.execute(f"LISTEN {DONE_CHANNEL}")
            done = app.enqueue(TaskRequest(name="job")).task_id
            app.run_until_idle()
            cancelled = app.enqueue(TaskRequest(name="job")).task_id
            app.cancel(cancelled)
            heard = [n.payload for n in driver.notifies(timeout=0.5)]
    finally:
        engine.dispose()
        app.close()
    assert heard == [str(done), str(cancelled)]


@pytest.mark.postgres
def test_postgres_waiters_are_woken_by_the_notification(pg_url, clock, clean_env, monkeypatch):
    """Given PostgreSQL and a fallback poll so slow (a minute) that only a notification
    can end the wait soon, when a caller waits for a task that is then cancelled, then the
    wait ends well within that minute with the cancelled task."""
    from tasker.control import waiting

    monkeypatch.setattr(waiting, "_SAFETY_POLL", 60.0)
    app = Tasker(database_url=pg_url, clock=clock)
    try:
        app.migrate()
        register(app)
        task_id = app.enqueue(TaskRequest(name="job")).task_id
        seen: list[str] = []
        waiter = threading.Thread(target=lambda: seen.append(app.wait(task_id).status))
        waiter.start()
        with pytest.raises(TimeoutError):  # the waiter is listening by now
            app.wait(task_id, timeout=0.2)
        app.cancel(task_id)
        waiter.join(20)
        assert not waiter.is_alive(), "the waiter was not woken by the notification"
        assert seen == ["cancelled"]
    finally:
        app.close()


def test_status_wait_prints_the_finished_task(backend, capsys):
    """Given a task in error, `tasker status ID --wait` prints it and exits 3 (error);
    for a pending task with --timeout it says it timed out and exits 4."""
    register(backend)
    url = backend.db.engine.url.render_as_string(hide_password=False)
    bad = backend.enqueue(TaskRequest(name="bad")).task_id
    backend.run_until_idle()
    assert main(["status", str(bad), "--wait", "--database-url", url]) == 3
    assert "status=error" in capsys.readouterr().out
    pending = backend.enqueue(TaskRequest(name="job")).task_id
    args = ["status", str(pending), "--wait", "--timeout", "0.1", "--database-url", url]
    assert main(args) == 4
    assert "still pending" in capsys.readouterr().err
