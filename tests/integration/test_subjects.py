"""One task per subject: `TaskRequest.subject`, `TaskHandler.one_per_subject`, the index."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from integration_support import task_class

from tasker import StepTemplate, TaskRequest
from tasker.errors import (
    DuplicateTaskError,
    IdempotencyConflictError,
    InvalidRequestError,
    PermanentError,
)
from tasker.store import schema as m


def ok(task, sequence, step):
    return {"ok": True}


def fails(task, sequence, step):
    raise PermanentError("no")


def single(name, handler=ok, version=None, one=True):
    cls = task_class(name, [StepTemplate(name="s", handler=handler)], version=version)
    cls.one_per_subject = one
    return cls


def task_count(app) -> int:
    with app.db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(m.tasks)).scalar_one())


def test_a_second_live_task_for_the_subject_is_a_duplicate(backend, clock):
    """Given a one_per_subject task pending for user:42, when another is enqueued for the
    same subject, then DuplicateTaskError names the first and nothing is stored; another
    subject, and another task name, are not affected."""
    backend.register(single("onboard"))
    backend.register(single("plain", one=False))
    first = backend.enqueue(TaskRequest(name="onboard", subject="user:42"))
    with pytest.raises(DuplicateTaskError) as info:
        backend.enqueue(TaskRequest(name="onboard", subject="user:42", context={"n": 2}))
    assert info.value.existing_task_id == first.task_id
    assert isinstance(info.value, InvalidRequestError)
    assert task_count(backend) == 1
    other = backend.enqueue(TaskRequest(name="onboard", subject="user:7"))
    plain = [backend.enqueue(TaskRequest(name="plain", subject="user:42")) for _ in range(2)]
    assert len({first.task_id, other.task_id, *(p.task_id for p in plain)}) == 4


def test_the_views_carry_subject_and_created_at_and_list_tasks_filters(backend, clock):
    """Given tasks with and without a subject, then each view says its subject and when
    it was created (aware UTC), and list_tasks(subject=) returns exactly that subject's."""
    backend.register(single("plain", one=False))
    a = backend.enqueue(TaskRequest(name="plain", subject="acct:1"))
    clock.advance(5)
    b = backend.enqueue(TaskRequest(name="plain"))
    c = backend.enqueue(TaskRequest(name="plain", subject="acct:1"))
    assert a.subject == "acct:1" and a.created_at == backend.get_task(a.task_id).created_at
    stored = backend.get_task(b.task_id)
    assert stored.subject is None and stored.created_at == clock()
    assert stored.created_at.utcoffset().total_seconds() == 0
    assert [t.task_id for t in backend.list_tasks(subject="acct:1")] == [c.task_id, a.task_id]
    assert backend.list_tasks(subject="acct:2") == []


def test_a_task_in_error_holds_its_subject_until_it_is_cancelled(backend, clock):
    """Given a one_per_subject task that ended in error, then the subject stays taken;
    when the task is cancelled, then a new task for the subject is accepted."""
    backend.register(single("charge", handler=fails))
    first = backend.enqueue(TaskRequest(name="charge", subject="order:9"))
    backend.run_until_idle()
    assert backend.get_task(first.task_id).status == "error"
    with pytest.raises(DuplicateTaskError):
        backend.enqueue(TaskRequest(name="charge", subject="order:9"))
    backend.cancel(first.task_id)
    again = backend.enqueue(TaskRequest(name="charge", subject="order:9"))
    assert again.task_id != first.task_id


def test_a_completed_task_frees_its_subject(backend, clock):
    """Given a one_per_subject task that the engine completed, when another is enqueued
    for the subject, then it is accepted (the engine's write released the subject)."""
    backend.register(single("welcome"))
    first = backend.enqueue(TaskRequest(name="welcome", subject="user:1"))
    backend.run_until_idle()
    assert backend.get_task(first.task_id).status == "complete"
    second = backend.enqueue(TaskRequest(name="welcome", subject="user:1"))
    assert second.task_id != first.task_id
    assert [t.task_id for t in backend.list_tasks(subject="user:1")] == [
        second.task_id,
        first.task_id,
    ]


def test_every_version_of_a_task_name_shares_the_subject(backend, clock):
    """Given version 1 of a one_per_subject task live for a subject, when version 2 is
    enqueued for it, then it is a duplicate of the version-1 task."""
    backend.register(single("journey", version="1"))
    backend.register(single("journey", version="2"))
    first = backend.enqueue(TaskRequest(name="journey", version="1", subject="user:5"))
    with pytest.raises(DuplicateTaskError) as info:
        backend.enqueue(TaskRequest(name="journey", version="2", subject="user:5"))
    assert info.value.existing_task_id == first.task_id


def test_the_idempotency_key_is_checked_before_the_subject(backend, clock):
    """Given a one_per_subject task enqueued with key k-1, when the same request comes
    again, then the first task is returned; with another key it is a duplicate; with the
    same key and another subject it is an idempotency conflict."""
    backend.register(single("single"))
    first = backend.enqueue(TaskRequest(name="single", subject="acct:1", idempotency_key="k-1"))
    again = backend.enqueue(TaskRequest(name="single", subject="acct:1", idempotency_key="k-1"))
    assert again.task_id == first.task_id
    with pytest.raises(DuplicateTaskError):
        backend.enqueue(TaskRequest(name="single", subject="acct:1", idempotency_key="k-2"))
    with pytest.raises(IdempotencyConflictError):
        backend.enqueue(TaskRequest(name="single", subject="acct:2", idempotency_key="k-1"))
    assert task_count(backend) == 1


@pytest.mark.parametrize("subject", [42, "", b"user", ["user:1"], "x" * 256])
def test_a_subject_that_is_not_a_string_is_refused(backend, subject):
    """Given a subject that is not a non-empty string (of at most 255 characters), then
    enqueue raises InvalidRequestError naming it, and stores nothing."""
    backend.register(single("plain", one=False))
    with pytest.raises(InvalidRequestError, match="subject"):
        backend.enqueue(TaskRequest(name="plain", subject=subject))
    assert task_count(backend) == 0


def test_of_concurrent_enqueues_for_one_subject_exactly_one_wins(make_app, clock):
    """Given eight apps on one database, when each enqueues a task for the same subject at
    the same moment from its own thread, then exactly one is stored and the seven others
    get DuplicateTaskError naming it."""
    apps = [make_app() for _ in range(8)]
    for app in apps:
        app.register(single("race"))
    barrier = threading.Barrier(len(apps))
    won: list[int] = []
    lost: list[int] = []
    other: list[BaseException] = []

    def enqueue(app):
        barrier.wait()
        try:
            won.append(app.enqueue(TaskRequest(name="race", subject="user:1")).task_id)
        except DuplicateTaskError as exc:
            lost.append(exc.existing_task_id)
        except BaseException as exc:
            other.append(exc)

    threads = [threading.Thread(target=enqueue, args=(a,)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert other == []
    assert len(won) == 1
    assert lost == won * 7
    assert task_count(apps[0]) == 1
