"""A task runs the DAG it was created with (its stored steps and edges), whatever the
worker's registration of its name and version says now (issue 8, defect 8).

Two apps on one database play the service that enqueued the task and a worker whose
registration differs: same name and version, another DAG; or no such task at all.
"""

from __future__ import annotations

import sqlalchemy as sa
from integration_support import EventLog, check_history, task_class

from tasker import StepTemplate, TaskRequest
from tasker.store import schema as m

NAME = "evolving"


def steps(log: EventLog, deps: dict[str, list[str]]) -> list[StepTemplate]:
    return [StepTemplate(name=n, handler=log.recorder(), depends_on=d) for n, d in deps.items()]


def enqueue_with(make_app, deps: dict[str, list[str]]) -> tuple[int, EventLog]:
    """Given a service that registered `deps` and enqueued one task (it runs nothing)."""
    log = EventLog()
    service = make_app()
    service.register(task_class(NAME, steps(log, deps), version="1.0.0"))
    return service.enqueue(TaskRequest(name=NAME)).task_id, log


def worker_with(make_app, deps: dict[str, list[str]], log: EventLog):
    worker = make_app()
    worker.register(task_class(NAME, steps(log, deps), version="1.0.0"))
    return worker


def test_the_stored_edges_order_the_steps_not_the_registration(make_app):
    """Given a task created with a -> b, when a worker whose registration says b -> a runs it,
    then a runs first, then b, and the task shows (and completes with) its own edges."""
    task_id, _ = enqueue_with(make_app, {"a": [], "b": ["a"]})
    log = EventLog()
    worker = worker_with(make_app, {"b": [], "a": ["b"]}, log)

    worker.run_until_idle()

    done = worker.get_task(task_id)
    assert done.status == "complete"
    assert log.of("start") == ["a", "b"]
    assert {n: s.depends_on for n, s in done.steps.items()} == {"a": (), "b": ("a",)}
    check_history(worker, task_id)


def test_a_step_added_to_the_registration_is_not_part_of_an_older_task(make_app):
    """Given a task created with a -> b, when a worker whose registration adds a step between
    them runs it, then a and b run (b right after a) and the new step is not part of it."""
    task_id, _ = enqueue_with(make_app, {"a": [], "b": ["a"]})
    log = EventLog()
    worker = worker_with(make_app, {"a": [], "new": ["a"], "b": ["new"]}, log)

    worker.run_until_idle()

    done = worker.get_task(task_id)
    assert done.status == "complete"
    assert log.of("start") == ["a", "b"]
    assert list(done.steps) == ["a", "b"]
    assert done.steps["b"].depends_on == ("a",)
    check_history(worker, task_id)


def test_a_step_removed_from_the_registration_fails_once_with_a_clear_error(make_app, clock):
    """Given a task created with a -> b, c, when a worker whose registration lost b runs it,
    then a and c complete, b fails at once for good (one attempt, recorded, naming the step),
    the task ends in error and nothing loops: a second run finds nothing to do."""
    task_id, _ = enqueue_with(make_app, {"a": [], "b": ["a"], "c": ["a"]})
    log = EventLog()
    worker = worker_with(make_app, {"a": [], "c": ["a"]}, log)

    worker.run_until_idle()
    clock.advance(3600)
    assert worker.run_until_idle() == 0

    done = worker.get_task(task_id)
    assert done.status == "error"
    assert sorted(log.of("start")) == ["a", "c"]
    b = done.steps["b"]
    assert (b.status, b.attempts, b.next_attempt_at) == ("error", 1, None)
    assert b.error is not None
    assert b.error["error_class"] == "tasker.errors.ConfigurationError"
    assert "has no step 'b'" in b.error["message"]
    assert "retry the task" in b.error["message"]
    failures = [t for t in worker.history(task_id) if t.step == "b" and t.to_status == "error"]
    assert len(failures) == 1 and "has no step 'b'" in failures[0].reason
    check_history(worker, task_id)


def test_a_renamed_step_fails_and_runs_again_once_its_handler_is_back(make_app):
    """Given a task created with a -> b, and a worker where b was renamed b2, when the worker
    runs it, then b fails with a recorded error and b2 is not part of the task; when a worker
    that has b again retries it, then b runs and the task completes."""
    task_id, _ = enqueue_with(make_app, {"a": [], "b": ["a"]})
    renamed = worker_with(make_app, {"a": [], "b2": ["a"]}, EventLog())
    renamed.run_until_idle()
    failed = renamed.get_task(task_id)
    assert (failed.status, failed.steps["b"].status, list(failed.steps)) == (
        "error",
        "error",
        ["a", "b"],
    )

    log = EventLog()
    fixed = worker_with(make_app, {"a": [], "b": ["a"]}, log)
    fixed.retry(task_id)
    fixed.run_until_idle()

    done = fixed.get_task(task_id)
    assert done.status == "complete"
    assert log.of("start") == ["b"]
    check_history(fixed, task_id)


def test_a_worker_without_the_task_leaves_it_to_one_that_has_it(make_app, clock):
    """Given a task, when a worker that has no handler of its name (or of its version) runs
    the message, then it starts no step and hands the task back, due a lease period later
    (no retry loop within the run); when a worker that has it runs it then, it completes."""
    task_id, log = enqueue_with(make_app, {"a": [], "b": ["a"]})
    no_name = make_app()
    no_name.register(task_class("other", steps(EventLog(), {"x": []})))
    no_version = make_app()
    no_version.register(task_class(NAME, steps(EventLog(), {"a": []}), version="2.0.0"))

    for worker in (no_name, no_version):
        worker.run_until_idle()
        waiting = worker.get_task(task_id)
        assert waiting.status in ("pending", "in_progress")
        assert {s.status for s in waiting.steps.values()} == {"pending"}
        assert {s.attempts for s in waiting.steps.values()} == {0}
        assert waiting.next_run_at is not None and waiting.next_run_at > clock()
        assert worker.run_until_idle() == 0  # handed back: nothing due now, no loop
        with worker.db.read() as conn:
            lease = conn.execute(
                sa.select(m.tasks.c.lease_owner).where(m.tasks.c.task_id == task_id)
            ).scalar()
        assert lease is None

    clock.advance(no_name.settings.lease_seconds + 1)
    owner = worker_with(make_app, {"a": [], "b": ["a"]}, log)
    owner.run_until_idle()
    assert owner.get_task(task_id).status == "complete"
    assert log.of("start") == ["a", "b"]
    check_history(owner, task_id)
