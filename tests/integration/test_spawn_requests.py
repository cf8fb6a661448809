"""What a spawned request's `idempotency_key` and `subject` do, on SQLite and PostgreSQL:
the same as in `enqueue` (API.md is silent on spawns; a user expects the request's fields
to mean what they mean everywhere)."""

from __future__ import annotations

from typing import Any

import pytest
from integration_support import task_class

from tasker import StepTemplate, TaskHandler, TaskRequest
from tasker.errors import DuplicateTaskError


def _work(task, sequence, step):  # type: ignore[no-untyped-def]
    return {"n": task.context.get("n")}


def _register_sync(app: Any, *, one_per_subject: bool = False) -> None:
    cls = task_class("sync", [StepTemplate(name="work", handler=_work)])
    if one_per_subject:
        cls = type("Sync", (cls,), {"one_per_subject": True})
    app.register(cls)


def _parent(app: Any, name: str, spawns: Any, *, retry_limit: int = 1) -> None:
    """A task whose one step runs `spawns(step)` and returns what it gives."""

    def handler(task, sequence, step):  # type: ignore[no-untyped-def]
        return spawns(step)

    app.register(
        task_class(name, [StepTemplate(name="fan_out", handler=handler, retry_limit=retry_limit)])
    )


def _sync(n: int = 1, **fields: Any) -> TaskRequest:
    return TaskRequest(name="sync", context={"n": n}, **fields)


def _tasks_named(app: Any, name: str) -> list[int]:
    return [t.task_id for t in app.list_tasks() if t.name == name]


def test_a_spawn_with_the_key_of_a_stored_task_gets_that_task(backend):
    """Given a task enqueued with idempotency key "sync-42", when a step spawns the same
    request under that key (wait=False), then the spawn returns the stored task's id and
    creates nothing; a second parent doing the same gets the same id."""
    _register_sync(backend)
    stored = backend.enqueue(_sync(idempotency_key="sync-42")).task_id
    _parent(
        backend, "p", lambda step: {"id": step.spawn(_sync(idempotency_key="sync-42"), wait=False)}
    )
    first = backend.enqueue(TaskRequest(name="p")).task_id
    second = backend.enqueue(TaskRequest(name="p")).task_id
    backend.run_until_idle()
    for parent in (first, second):
        view = backend.get_task(parent)
        assert view.status == "complete"
        assert view.steps["fan_out"].results == {"id": stored}
        assert list(view.children) == []  # it spawned none: the task is not its child
    assert _tasks_named(backend, "sync") == [stored]


def test_a_keyed_spawn_creates_the_child_once_and_later_spawns_of_the_key_get_it(backend):
    """Given a step spawning a request with a new idempotency key (waiting for it), when
    run, then the child is created with that key and awaited; a later task spawning the
    key (wait=False) gets that child; an enqueue of the key returns it too."""
    _register_sync(backend)
    _parent(backend, "p", lambda step: {"id": step.spawn(_sync(idempotency_key="k1"))})
    _parent(backend, "q", lambda step: {"id": step.spawn(_sync(idempotency_key="k1"), wait=False)})
    p = backend.enqueue(TaskRequest(name="p")).task_id
    backend.run_until_idle()
    view = backend.get_task(p)
    assert view.status == "complete"
    (child,) = view.children
    assert backend.get_task(child).idempotency_key == "k1"
    assert backend.get_task(child).parent_task_id == p
    q = backend.enqueue(TaskRequest(name="q")).task_id
    backend.run_until_idle()
    assert backend.get_task(q).steps["fan_out"].results == {"id": child}
    again = backend.enqueue(_sync(idempotency_key="k1"))
    assert again.task_id == child
    assert _tasks_named(backend, "sync") == [child]


def test_one_run_spawning_a_key_twice_gets_one_child(backend):
    """Given a step that spawns the same keyed request under two spawn keys, then both
    spawns return one id and one child is created."""
    _register_sync(backend)
    _parent(
        backend,
        "p",
        lambda step: {
            "ids": [step.spawn(_sync(idempotency_key="twice"), key=k) for k in ("a", "b")]
        },
    )
    p = backend.enqueue(TaskRequest(name="p")).task_id
    backend.run_until_idle()
    view = backend.get_task(p)
    assert view.status == "complete"
    (child,) = view.children
    assert view.steps["fan_out"].results == {"ids": [child, child]}


@pytest.mark.parametrize(
    ("spawns", "error_class", "message"),
    [
        # The key names a stored task made by a different request.
        (
            lambda step: step.spawn(_sync(2, idempotency_key="taken"), wait=False),
            "tasker.errors.IdempotencyConflictError",
            "with a different request",
        ),
        # The key names a task this step did not spawn, and the step would wait for it.
        (
            lambda step: step.spawn(_sync(1, idempotency_key="taken")),
            "tasker.errors.InvalidRequestError",
            "which this step did not spawn: it cannot wait for it",
        ),
        # One run uses one key for two different requests.
        (
            lambda step: [step.spawn(_sync(i, idempotency_key="new"), key=str(i)) for i in (1, 2)],
            "tasker.errors.IdempotencyConflictError",
            "of this run with a different request",
        ),
    ],
)
def test_a_spawn_refused_by_its_key_fails_the_attempt_and_spawns_nothing(
    backend, spawns, error_class, message
):
    """Given a stored task under key "taken", when a step's spawn is refused by its key,
    then the attempt fails naming why, and no child is created."""
    _register_sync(backend)
    stored = backend.enqueue(_sync(1, idempotency_key="taken")).task_id
    _parent(backend, "p", lambda step: {"r": spawns(step)})
    p = backend.enqueue(TaskRequest(name="p")).task_id
    backend.run_until_idle()
    view = backend.get_task(p)
    error = view.steps["fan_out"].error
    assert view.status == "error" and error is not None
    assert error["error_class"] == error_class
    assert message in error["message"]
    assert list(view.children) == []
    assert _tasks_named(backend, "sync") == [stored]


def test_a_one_per_subject_child_holds_its_subject(backend, clock):
    """Given a one_per_subject task whose step waits an hour, when a step spawns it with
    subject "user:7", then the child holds the subject: a second parent's spawn of it
    raises DuplicateTaskError in its handler (which takes the holder's id from it), as an
    enqueue for the subject does; one run spawning the subject twice is refused the
    same way; once the child is final a spawn of the subject creates a new task."""

    class Hold(TaskHandler):
        name = "hold"
        one_per_subject = True
        step_templates = [StepTemplate(name="work", handler=_work, wait=3600)]  # noqa: RUF012

    backend.register(Hold)
    user7 = TaskRequest(name="hold", subject="user:7")

    def again(step):  # type: ignore[no-untyped-def]
        try:
            return {"id": step.spawn(user7, wait=False)}
        except DuplicateTaskError as exc:
            return {"held_by": exc.existing_task_id}

    def twice(step):  # type: ignore[no-untyped-def]
        step.spawn(user7, key="a", wait=False)
        try:
            step.spawn(user7, key="b", wait=False)
        except DuplicateTaskError as exc:
            return {"held_by": exc.existing_task_id}
        return {}

    _parent(backend, "p", lambda step: {"id": step.spawn(user7)})
    _parent(backend, "q", again)
    _parent(backend, "r", twice)
    p = backend.enqueue(TaskRequest(name="p")).task_id
    backend.run_until_idle()
    (child,) = backend.get_task(p).children
    assert backend.get_task(child).subject == "user:7"
    q = backend.enqueue(TaskRequest(name="q")).task_id
    backend.run_until_idle()
    assert backend.get_task(q).steps["fan_out"].results == {"held_by": child}
    assert list(backend.get_task(q).children) == []
    with pytest.raises(DuplicateTaskError) as refused:
        backend.enqueue(user7)
    assert refused.value.existing_task_id == child
    clock.advance(3601)
    backend.run_until_idle()
    assert backend.get_task(p).status == "complete"
    r = backend.enqueue(TaskRequest(name="r")).task_id
    backend.run_until_idle()
    view = backend.get_task(r)
    (first,) = view.children
    assert first != child
    assert view.steps["fan_out"].results == {"held_by": first}


@pytest.mark.parametrize("field", ["idempotency_key", "subject"])
def test_a_key_or_subject_taken_before_the_outcome_is_written_fails_only_that_attempt(
    backend, clock, field
):
    """Given a step that spawns a keyed (or one_per_subject) request and, before its
    outcome is written, the same request is enqueued elsewhere (taking the key or the
    subject), when the outcome's write inserts the child, then that attempt is recorded
    as failed naming the conflict, nothing of it is stored, and its retry gets the
    stored task (key) or is told who holds the subject."""

    class Hold(TaskHandler):
        name = "hold"
        one_per_subject = True
        step_templates = [StepTemplate(name="work", handler=_work, wait=3600)]  # noqa: RUF012

    backend.register(Hold)
    request = TaskRequest(name="hold", **{field: "race-1"})
    runs: list[int] = []

    def racing(step):  # type: ignore[no-untyped-def]
        runs.append(step.attempts)
        try:
            got = step.spawn(request, wait=False)
        except DuplicateTaskError as exc:
            return {"held_by": exc.existing_task_id}
        if len(runs) == 1:
            backend.enqueue(request)  # another caller takes the key or subject meanwhile
        return {"id": got}

    _parent(backend, "p", racing, retry_limit=2)
    p = backend.enqueue(TaskRequest(name="p")).task_id
    backend.run_until_idle()
    view = backend.get_task(p)
    step = view.steps["fan_out"]
    assert (step.status, step.attempts) == ("error", 1)
    assert step.error is not None and "taken" in step.error["message"]
    (other,) = _tasks_named(backend, "hold")
    assert list(view.children) == []
    clock.advance(3600)
    backend.run_until_idle()
    view = backend.get_task(p)
    assert view.status == "complete"
    want = {"id": other} if field == "idempotency_key" else {"held_by": other}
    assert view.steps["fan_out"].results == want
    assert _tasks_named(backend, "hold") == [other]
