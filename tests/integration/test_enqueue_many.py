"""`Tasker.enqueue_many`: many tasks validated first, then stored all or none, in order."""

from __future__ import annotations

from dataclasses import replace

import pytest
import sqlalchemy as sa
from integration_support import messages_sent, task_class
from sqlalchemy.exc import IntegrityError

from tasker import StepTemplate, TaskRequest
from tasker.errors import (
    ContextValidationError,
    DuplicateTaskError,
    IdempotencyConflictError,
    InvalidRequestError,
    UnknownTaskError,
)
from tasker.store import schema as m

SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}},
    "required": ["n"],
}


def ok(task, sequence, step):
    return {"n": task.context["n"]}


@pytest.fixture
def app(backend):
    """The backend with a diamond (`d`, context {"n": int}) and a one_per_subject task."""
    backend.register(
        task_class(
            "d",
            [
                StepTemplate(name="a", handler=ok),
                StepTemplate(name="b", handler=ok, depends_on=["a"]),
                StepTemplate(name="c", handler=ok, depends_on=["a"], skippable=True),
                StepTemplate(name="d", handler=ok, depends_on=["b", "c"]),
            ],
            schema=SCHEMA,
        )
    )
    single = task_class("single", [StepTemplate(name="s", handler=ok)], schema=SCHEMA)
    single.one_per_subject = True
    backend.register(single)
    return backend


def rows(app, table) -> int:
    with app.db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def nothing_stored(app, sent_before) -> None:
    for table in (m.tasks, m.workflow_steps, m.step_edges, m.task_transitions, m.outbox):
        assert rows(app, table) == 0, table.name
    assert messages_sent(app) == sent_before


def test_the_tasks_are_stored_in_order_and_each_view_is_the_stored_task(app):
    """Given three valid requests (one bypassing a step), when they are enqueued at once,
    then three tasks are returned in order, each equal to what get_task reads back, with
    their steps, edges, history and one message each; and they all run to completion."""
    requests = [
        TaskRequest(name="d", context={"n": 1}, tags=["x"]),
        TaskRequest(name="d", context={"n": 2}, bypass_steps=["c"]),
        TaskRequest(name="single", context={"n": 3}, subject="user:1"),
    ]
    sent = messages_sent(app)

    views = app.enqueue_many(requests)

    assert [v.context["n"] for v in views] == [1, 2, 3]
    assert [v.task_id for v in views] == sorted(v.task_id for v in views)
    for view in views:
        assert view == app.get_task(view.task_id)
    assert views[1].steps["c"].status == "skipped"
    assert (rows(app, m.workflow_steps), rows(app, m.step_edges)) == (9, 8)
    assert messages_sent(app) - sent == 3
    assert sorted((h.step or "", h.to_status) for h in app.history(views[1].task_id)) == [
        ("", "pending"),
        ("a", "pending"),
        ("b", "pending"),
        ("c", "skipped"),
        ("d", "pending"),
    ]
    app.run_until_idle()
    assert {app.get_task(v.task_id).status for v in views} == {"complete"}
    assert app.get_task(views[0].task_id).steps["d"].results == {"n": 1}


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (TaskRequest(name="d", context={"n": "two"}), ContextValidationError),
        (TaskRequest(name="nope"), UnknownTaskError),
        (TaskRequest(name="d", context={"n": 2}, bypass_steps=["a"]), InvalidRequestError),
        ({"name": "d"}, InvalidRequestError),
    ],
)
def test_one_bad_request_stores_nothing_and_says_which_it_is(app, bad, error):
    """Given three requests whose second is invalid, when they are enqueued at once,
    then the error of that request is raised with request_index 1, and no task, step,
    edge, history or outbox row is stored and no message sent."""
    sent = messages_sent(app)
    with pytest.raises(error) as info:
        app.enqueue_many(
            [TaskRequest(name="d", context={"n": 1}), bad, TaskRequest(name="d", context={"n": 3})]
        )
    assert info.value.request_index == 1
    nothing_stored(app, sent)


def test_a_failing_insert_stores_none_of_the_tasks(app, monkeypatch):
    """Given an insert whose third task breaks a foreign key (the database refuses it),
    when three requests are enqueued at once, then the IntegrityError is raised and
    neither of the two good tasks is stored: the batch is one transaction."""
    insert = app.store.insert_tasks

    def third_is_broken(tasks, now, caller=None):
        broken = replace(tasks[2], values={**tasks[2].values, "named_task_id": 10**9})
        return insert([tasks[0], tasks[1], broken], now, caller)

    monkeypatch.setattr(app.store, "insert_tasks", third_is_broken)
    sent = messages_sent(app)
    with pytest.raises(IntegrityError):
        app.enqueue_many([TaskRequest(name="d", context={"n": i}) for i in range(3)])
    nothing_stored(app, sent)


def test_keys_stored_before_or_repeated_in_the_batch_answer_with_their_task(app):
    """Given a task stored under key k1, when a batch repeats k1, adds k2 twice (the same
    request) and one request without a key, then k1 gets the stored task, both k2 get one
    new task, and only two tasks are new (two messages)."""
    first = app.enqueue(TaskRequest(name="d", context={"n": 1}, idempotency_key="k1"))
    sent = messages_sent(app)

    views = app.enqueue_many(
        [
            TaskRequest(name="d", context={"n": 1}, idempotency_key="k1"),
            TaskRequest(name="d", context={"n": 2}, idempotency_key="k2"),
            TaskRequest(name="d", context={"n": 3}),
            TaskRequest(name="d", context={"n": 2}, idempotency_key="k2"),
        ]
    )

    ids = [v.task_id for v in views]
    assert ids[0] == first.task_id
    assert ids[1] == ids[3] and len({ids[0], ids[1], ids[2]}) == 3
    assert views[3] == views[1] == app.get_task(ids[1])
    assert rows(app, m.tasks) == 3
    assert messages_sent(app) - sent == 2


@pytest.mark.parametrize("stored_first", [True, False], ids=["stored", "in_the_batch"])
def test_a_key_reused_for_another_request_stores_nothing(app, stored_first):
    """Given key k used by a stored task or by an earlier request of the batch, when a
    request of the batch uses k with another context, then IdempotencyConflictError names
    that request and nothing new is stored."""
    earlier = []
    if stored_first:
        app.enqueue(TaskRequest(name="d", context={"n": 1}, idempotency_key="k"))
    else:
        earlier = [TaskRequest(name="d", context={"n": 1}, idempotency_key="k")]
    requests = [
        TaskRequest(name="d", context={"n": 0}),
        *earlier,
        TaskRequest(name="d", context={"n": 9}, idempotency_key="k"),
    ]
    with pytest.raises(IdempotencyConflictError) as info:
        app.enqueue_many(requests)
    assert info.value.request_index == len(requests) - 1
    assert rows(app, m.tasks) == (1 if stored_first else 0)


def test_a_subject_held_by_a_live_task_or_asked_twice_stores_nothing(app):
    """Given a one_per_subject task live for user:1, when a batch asks for user:1 again,
    then DuplicateTaskError names the holder and that request; when a batch asks twice
    for user:2, then InvalidRequestError names the second; neither stores anything."""
    holder = app.enqueue(TaskRequest(name="single", context={"n": 0}, subject="user:1"))
    with pytest.raises(DuplicateTaskError) as dup:
        app.enqueue_many(
            [
                TaskRequest(name="single", context={"n": 1}, subject="user:3"),
                TaskRequest(name="single", context={"n": 2}, subject="user:1"),
            ]
        )
    assert (dup.value.existing_task_id, dup.value.request_index) == (holder.task_id, 1)
    with pytest.raises(InvalidRequestError) as twice:
        app.enqueue_many(
            [
                TaskRequest(name="single", context={"n": 1}, subject="user:2"),
                TaskRequest(name="single", context={"n": 2}, subject="user:2"),
            ]
        )
    assert twice.value.request_index == 1
    assert "user:2" in str(twice.value)
    assert rows(app, m.tasks) == 1


def test_an_empty_batch_or_a_single_request_instead_of_a_list(app):
    """Given no requests, enqueue_many returns [] and stores nothing; given a bare
    TaskRequest instead of a list, it says so."""
    assert app.enqueue_many([]) == []
    with pytest.raises(InvalidRequestError, match="list"):
        app.enqueue_many(TaskRequest(name="d", context={"n": 1}))  # type: ignore[arg-type]
    assert rows(app, m.tasks) == 0
