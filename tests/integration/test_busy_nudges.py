"""A nudge that arrives while the task's pass is busy is not left to the sweeper.

A signal, an ended child or a freed limit slot nudges its task: an outbox row and a
message. A worker that gets the message while another pass holds the task's lease
cannot claim it; the pass that holds it must then run the task again once it releases
it, instead of leaving the outbox row to the sweeper (`sweep_seconds` later).

Here "another worker" is this test calling the engine while the pass runs on a thread.
A signal also bumps the task's revision, so the busy pass's next write reads the events
again; an ended child writes nothing of its parent's, so only the nudge tells it.
"""

from __future__ import annotations

import threading
import time
from unittest import mock

from integration_support import task_class

from tasker import StepTemplate, Tasker, TaskRequest


def _busy(started: threading.Event, release: threading.Event, *, fail: bool = False):  # type: ignore[no-untyped-def]
    def slow(task, sequence, step):  # type: ignore[no-untyped-def]
        started.set()
        assert release.wait(30)
        if fail:
            raise RuntimeError("try again later")
        return {}

    return slow


def _pass_in_background(app: Tasker, task_id: int) -> threading.Thread:
    runner = threading.Thread(target=app.engine.run_task, args=(task_id,))
    runner.start()
    return runner


def test_a_signal_during_a_busy_pass_is_taken_without_the_sweeper(backend):
    """Given a task with a slow step and a step waiting for the event "go", whose pass
    runs the slow step, When "go" is signalled meanwhile and another worker's claim of
    its message fails (the task is leased), Then once the slow step ends and the pass
    releases the task idle, the task runs again at once (no sweep, no clock moved) and
    the waiting step takes the event."""
    started, release = threading.Event(), threading.Event()
    backend.register(
        task_class(
            "busy_waiter",
            [
                StepTemplate(name="slow", handler=_busy(started, release)),
                StepTemplate(
                    name="waiter", handler=lambda t, q, s: {"got": s.event}, wait_for="go"
                ),
            ],
        )
    )
    task = backend.enqueue(TaskRequest(name="busy_waiter"))
    backend.dispatch.drain()  # this test delivers the messages itself
    runner = _pass_in_background(backend, task.task_id)
    try:
        assert started.wait(10)
        backend.signal(task.task_id, "go", {"n": 1})
        assert backend.run_until_idle() >= 1  # the signal's message: its claim fails
        assert backend.get_task(task.task_id).steps["waiter"].status == "pending"
    finally:
        release.set()
        runner.join(30)
    backend.run_until_idle()  # what is due now: no sweep, the clock has not moved
    done = backend.get_task(task.task_id)
    assert done.status == "complete"
    assert done.steps["waiter"].results == {"got": {"n": 1}}


def test_a_child_ending_as_a_busy_pass_plans_its_release_settles_the_step_at_once(backend):
    """Given a parent with a step awaiting one child and a slow step, When the slow step
    ends and the pass reads the children before releasing the parent idle, and the child
    ends just after that read (the parent's claim of its nudge fails: still leased),
    Then once the pass releases the parent it runs again at once and completes (no
    sweep, no clock moved)."""
    from tasker.engine import pass_io

    started, release = threading.Event(), threading.Event()

    def fan(task, sequence, step):  # type: ignore[no-untyped-def]
        return {"child": step.spawn(TaskRequest(name="kid"))}

    backend.register(task_class("kid", [StepTemplate(name="work", handler=lambda t, q, s: {})]))
    backend.register(
        task_class(
            "busy_parent",
            [
                StepTemplate(name="fan", handler=fan),
                StepTemplate(name="slow", handler=_busy(started, release)),
            ],
        )
    )
    task = backend.enqueue(TaskRequest(name="busy_parent"))
    backend.dispatch.drain()  # this test delivers the messages itself
    real = pass_io.awaited_children
    ran: list[int] = []

    def then_the_child_ends(db, steps, *rest):  # type: ignore[no-untyped-def]
        read = real(db, steps, *rest)
        if not ran:  # the read before the idle release: the child is still live
            (child,) = backend.get_task(task.task_id).children
            ran.append(child)
            backend.engine.run_task(child)  # another worker runs the child
            assert task.task_id in backend.dispatch.drain()  # and takes the child's nudge:
            backend.engine.run_task(task.task_id)  # its claim fails (the task is leased)
        return read

    runner = _pass_in_background(backend, task.task_id)
    try:
        assert started.wait(10)
        for _ in range(200):  # until the fan step's outcome (with the child) is stored
            if backend.get_task(task.task_id).children:
                break
            time.sleep(0.05)
        with mock.patch.object(pass_io, "awaited_children", then_the_child_ends):
            release.set()
            runner.join(30)
    finally:
        release.set()
        runner.join(30)
    assert ran and backend.get_task(ran[0]).status == "complete"
    assert backend.get_task(task.task_id).steps["fan"].awaiting == "children"
    backend.run_until_idle()  # what is due now: no sweep, the clock has not moved
    assert backend.get_task(task.task_id).status == "complete"
