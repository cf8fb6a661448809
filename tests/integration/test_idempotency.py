"""Idempotency keys, on SQLite and on PostgreSQL: what counts as "the same request",
and which database errors are (and are not) a key already taken.

Each test reads Given / When / Then.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from integration_support import messages_sent, task_class
from sqlalchemy.exc import IntegrityError

from tasker import StepTemplate, TaskRequest, errors


def versions(app, *numbers):
    """Register the task `idem` in each of these versions (one step each)."""
    for version in numbers:
        steps = [StepTemplate(name="s", handler=lambda t, q, s: {})]
        app.register(task_class("idem", steps, version=version))


def test_a_repeat_without_a_version_after_a_newer_one_was_registered_returns_the_first_task(
    backend,
):
    """Given a task enqueued with a key and no version (so it ran 1.0.0, the newest then),
    when version 2.0.0 is registered and the same request is sent again,
    then the first task is returned (still 1.0.0) and nothing new is stored or sent."""
    versions(backend, "1.0.0")
    first = backend.enqueue(TaskRequest(name="idem", context={"n": 1}, idempotency_key="k"))
    sent = messages_sent(backend)
    versions(backend, "2.0.0")

    again = backend.enqueue(TaskRequest(name="idem", context={"n": 1}, idempotency_key="k"))

    assert (again.task_id, again.version) == (first.task_id, "1.0.0")
    assert len(backend.list_tasks()) == 1
    assert messages_sent(backend) == sent


def test_naming_the_version_the_first_request_resolved_to_is_the_same_request(backend):
    """Given a task enqueued with a key and no version (it ran 1.0.0), and 2.0.0 registered,
    when the request is sent again naming version 1.0.0,
    then it is the same request: the first task is returned."""
    versions(backend, "1.0.0")
    first = backend.enqueue(TaskRequest(name="idem", idempotency_key="k"))
    versions(backend, "2.0.0")

    again = backend.enqueue(TaskRequest(name="idem", version="1.0.0", idempotency_key="k"))

    assert again.task_id == first.task_id
    assert len(backend.list_tasks()) == 1


def test_omitting_the_version_that_still_is_the_newest_is_the_same_request(backend):
    """Given a task enqueued with a key naming version 1.0.0, the newest,
    when the request is sent again without a version (which still means 1.0.0),
    then the first task is returned."""
    versions(backend, "1.0.0")
    first = backend.enqueue(TaskRequest(name="idem", version="1.0.0", idempotency_key="k"))

    again = backend.enqueue(TaskRequest(name="idem", idempotency_key="k"))

    assert again.task_id == first.task_id


@pytest.mark.parametrize(
    ("first_version", "second_version"),
    [
        ("1.0.0", "2.0.0"),  # two versions named explicitly
        (None, "2.0.0"),  # the first ran 1.0.0; the second names another
        ("1.0.0", None),  # the second means the newest, now 2.0.0
    ],
)
def test_a_different_version_under_the_same_key_is_a_conflict(
    backend, first_version, second_version
):
    """Given a task enqueued with a key (running 1.0.0) and 2.0.0 registered since,
    when the key is sent with a request that means another version,
    then IdempotencyConflictError is raised and nothing is stored."""
    versions(backend, "1.0.0")
    backend.enqueue(TaskRequest(name="idem", version=first_version, idempotency_key="k"))
    versions(backend, "2.0.0")

    with pytest.raises(errors.IdempotencyConflictError):
        backend.enqueue(TaskRequest(name="idem", version=second_version, idempotency_key="k"))
    assert len(backend.list_tasks()) == 1


def test_a_database_error_other_than_the_key_is_raised_as_itself(backend, monkeypatch):
    """Given an insert that breaks a constraint other than the idempotency key
    (a foreign key to a named task that does not exist),
    when a request with a key is enqueued,
    then the database's IntegrityError is raised after one try, not reported as a key
    collision, and nothing is stored."""
    versions(backend, "1.0.0")
    insert = backend.store.insert_tasks
    calls = []

    def broken_insert(tasks, now, caller=None):
        calls.extend(t.values["idempotency_key"] for t in tasks)
        broken = [replace(t, values={**t.values, "named_task_id": 10**9}) for t in tasks]
        return insert(broken, now, caller)

    monkeypatch.setattr(backend.store, "insert_tasks", broken_insert)

    with pytest.raises(IntegrityError) as raised:
        backend.enqueue(TaskRequest(name="idem", idempotency_key="k"))

    assert "idempotency" not in str(raised.value.orig).lower()
    assert calls == ["k"]
    assert backend.list_tasks() == []


def test_the_key_taken_between_the_check_and_the_insert_answers_with_the_winner(
    backend, monkeypatch
):
    """Given a concurrent request that stores the same key between this request's look-up
    and its insert (the insert then breaks the key's unique constraint),
    when the request is enqueued,
    then it answers with the winner's task, as a repeat would."""
    versions(backend, "1.0.0")
    insert = backend.store.insert_tasks
    winner = []

    def racing_insert(tasks, now, caller=None):
        if not winner:  # the other request commits first, with the same key and request
            winner.append(insert(tasks, now)[0][0])
        return insert(tasks, now, caller)

    monkeypatch.setattr(backend.store, "insert_tasks", racing_insert)

    task = backend.enqueue(TaskRequest(name="idem", idempotency_key="k"))

    assert [task.task_id] == winner
    assert len(backend.list_tasks()) == 1
