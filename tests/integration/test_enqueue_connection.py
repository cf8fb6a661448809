"""`enqueue(request, connection=conn)` and `enqueue_many(..., connection=conn)`: the task
is written in the caller's transaction and its message is sent only once that commits."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from integration_support import task_class

from tasker import StepTemplate, Tasker, TaskRequest
from tasker.errors import (
    ContextValidationError,
    DuplicateTaskError,
    IdempotencyConflictError,
    InvalidRequestError,
)
from tasker.store import schema as m


def ok(task: Any, sequence: Any, step: Any) -> dict[str, Any]:
    return {"ok": True}


def plain(name: str = "after_order", **attrs: Any) -> type:
    cls = task_class(
        name,
        [StepTemplate(name="s", handler=ok)],
        schema={"type": "object", "properties": {"order": {"type": "integer"}}},
    )
    for key, value in attrs.items():
        setattr(cls, key, value)
    return cls


@pytest.fixture
def user_db(backend_url: str) -> Iterator[sa.Engine]:
    """The user's own engine on tasker's database, with a table of theirs."""
    engine = sa.create_engine(backend_url)
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE orders (order_id INTEGER NOT NULL, note VARCHAR(64))"))
    yield engine
    engine.dispose()


def counts(engine: sa.Engine) -> dict[str, int]:
    """What another connection sees: tasks, steps, outbox rows, named tasks, user rows."""
    tables = {
        "tasks": m.tasks,
        "steps": m.workflow_steps,
        "outbox": m.outbox,
        "named": m.named_tasks,
    }
    with engine.connect() as c:
        seen = {
            k: int(c.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
            for k, t in tables.items()
        }
        seen["orders"] = int(c.execute(sa.text("SELECT count(*) FROM orders")).scalar_one())
    return seen


@pytest.fixture
def sends(backend: Tasker, monkeypatch: pytest.MonkeyPatch, backend_url: str) -> list[Any]:
    """Every send of the app, with what a fresh connection sees of its tasks at that moment."""
    log: list[Any] = []
    real = backend.dispatch.send_many
    observer = sa.create_engine(backend_url, poolclass=sa.pool.NullPool)

    def send_many(task_ids: list[int]) -> None:
        with observer.connect() as c:
            visible = c.execute(
                sa.select(m.tasks.c.task_id).where(m.tasks.c.task_id.in_(task_ids))
            ).all()
        log.append((list(task_ids), sorted(r.task_id for r in visible)))
        real(task_ids)

    monkeypatch.setattr(backend.dispatch, "send_many", send_many)
    return log


def test_the_task_commits_with_the_callers_transaction_and_is_sent_after(backend, user_db, sends):
    """Given a transaction that wrote a row of the user's (it holds SQLite's write lock),
    when a task never enqueued before is enqueued through its connection, then until the
    commit no other connection sees the task and nothing is sent; after it the task is
    visible, its message was sent when it was already visible, and it runs."""
    backend.register(plain())
    with user_db.begin() as conn:
        conn.execute(sa.text("INSERT INTO orders VALUES (7, 'new')"))
        task = backend.enqueue(TaskRequest(name="after_order", context={"order": 7}), conn)
        assert task.status == "pending" and task.context == {"order": 7}
        assert counts(user_db)["tasks"] == 0
        assert sends == []
    assert sends == [([task.task_id], [task.task_id])]
    assert counts(user_db) == {"tasks": 1, "steps": 1, "outbox": 1, "named": 1, "orders": 1}
    backend.run_until_idle()
    assert backend.get_task(task.task_id).status == "complete"


def test_a_rollback_leaves_no_task_no_message_and_no_cached_catalog_ids(backend, user_db, sends):
    """Given a first-ever task name enqueued through a connection, when the transaction
    rolls back, then there is no task, no outbox row, no named task and no message; and
    enqueueing the name again (with or without a connection) works: no rolled-back id was
    cached."""
    backend.register(plain())
    with pytest.raises(RuntimeError), user_db.begin() as conn:
        conn.execute(sa.text("INSERT INTO orders VALUES (8, 'new')"))
        backend.enqueue(TaskRequest(name="after_order", context={"order": 8}), conn)
        raise RuntimeError("the order failed")
    assert counts(user_db) == {"tasks": 0, "steps": 0, "outbox": 0, "named": 0, "orders": 0}
    assert backend.run_until_idle() == 0
    assert sends == []
    with user_db.begin() as conn:
        inside = backend.enqueue(TaskRequest(name="after_order"), connection=conn)
    outside = backend.enqueue(TaskRequest(name="after_order"))
    backend.run_until_idle()
    assert [backend.get_task(t.task_id).status for t in (inside, outside)] == ["complete"] * 2


def test_a_connection_not_in_a_transaction_begins_one(backend, user_db, sends):
    """Given a connection with no transaction yet, when a task is enqueued through it, then
    it began one (autobegin, as SQLAlchemy 2 does): closing without commit leaves nothing,
    and `conn.commit()` commits the task and sends it."""
    backend.register(plain())
    with user_db.connect() as conn:
        backend.enqueue(TaskRequest(name="after_order"), connection=conn)
        assert conn.in_transaction()
    assert counts(user_db)["tasks"] == 0 and sends == []
    with user_db.connect() as conn:
        task = backend.enqueue(TaskRequest(name="after_order"), connection=conn)
        conn.commit()
        assert sends == [([task.task_id], [task.task_id])]
    assert counts(user_db)["tasks"] == 1


def test_a_connection_to_another_database_is_refused_storing_nothing(
    backend, user_db, tmp_path, pg_admin
):
    """Given a connection to another database of the same kind, when a task is enqueued
    through it, then InvalidRequestError says it is a different database, and nothing is
    stored in either; a connection that is not a SQLAlchemy Connection or is in autocommit
    mode is refused too."""
    backend.register(plain())
    if backend.db.is_postgres:
        name = f"tasker_other_{uuid.uuid4().hex[:12]}"
        with pg_admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        other_url = user_db.url.set(database=name)
    else:
        name, other_url = "", sa.engine.make_url(f"sqlite:///{tmp_path}/other.db")
    other = sa.create_engine(other_url)
    try:
        with other.begin() as conn, pytest.raises(InvalidRequestError, match="different database"):
            backend.enqueue(TaskRequest(name="after_order"), connection=conn)
        with other.connect() as conn:
            assert sa.inspect(conn).get_table_names() == []
    finally:
        other.dispose()
        if name:
            with pg_admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    with pytest.raises(InvalidRequestError, match="SQLAlchemy Connection"):
        backend.enqueue(TaskRequest(name="after_order"), connection=user_db)
    with (
        user_db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
        pytest.raises(InvalidRequestError, match="autocommit"),
    ):
        backend.enqueue(TaskRequest(name="after_order"), connection=conn)
    assert counts(user_db)["tasks"] == 0


def test_bad_input_stores_nothing_and_the_callers_transaction_goes_on(backend, user_db, sends):
    """Given a caller's transaction, when enqueue raises for a bad context, an unknown
    bypass step, a subject held by a task of the same transaction and a key reused for a
    different request, then each stored nothing and the transaction goes on: its own
    writes and the one good task commit, and only that task is sent."""
    backend.register(plain(one_per_subject=True))
    with user_db.begin() as conn:
        conn.execute(sa.text("INSERT INTO orders VALUES (9, 'kept')"))
        with pytest.raises(ContextValidationError):
            backend.enqueue(TaskRequest(name="after_order", context={"order": "x"}), conn)
        with pytest.raises(InvalidRequestError, match="bypass_steps"):
            backend.enqueue(TaskRequest(name="after_order", bypass_steps=["nope"]), conn)
        good = backend.enqueue(
            TaskRequest(name="after_order", subject="order:9", idempotency_key="k9"), conn
        )
        with pytest.raises(DuplicateTaskError) as duplicate:
            backend.enqueue(TaskRequest(name="after_order", subject="order:9"), conn)
        assert duplicate.value.existing_task_id == good.task_id
        with pytest.raises(IdempotencyConflictError):
            backend.enqueue(TaskRequest(name="after_order", idempotency_key="k9"), conn)
        conn.execute(sa.text("INSERT INTO orders VALUES (10, 'after the errors')"))
    assert counts(user_db) == {"tasks": 1, "steps": 1, "outbox": 1, "named": 1, "orders": 2}
    assert sends == [([good.task_id], [good.task_id])]


def test_an_idempotent_repeat_within_and_after_the_transaction_is_the_first_task(
    backend, user_db, sends
):
    """Given a task enqueued with a key through a connection, when the same request is
    repeated in that transaction and after its commit, then each repeat is that task, not
    created again, and one message was sent."""
    backend.register(plain())
    request = TaskRequest(name="after_order", context={"order": 1}, idempotency_key="o1")
    with user_db.begin() as conn:
        first, created = backend.submit(request, conn)
        again, created_again = backend.submit(request, conn)
        assert created and not created_again and again.task_id == first.task_id
        assert again.context == {"order": 1}  # read through the caller's transaction
    later = backend.enqueue(request)
    with user_db.begin() as conn:
        [within] = backend.enqueue_many([request], connection=conn)
    assert later.task_id == within.task_id == first.task_id
    assert counts(user_db)["tasks"] == 1
    assert sends == [([first.task_id], [first.task_id])]


def test_enqueue_many_through_a_connection(backend, user_db, sends):
    """Given a batch enqueued through a connection, then it commits (and is sent, once)
    with the caller's transaction or not at all; a bad request in a batch names its index,
    stores nothing and leaves the transaction usable."""
    backend.register(plain())
    batch = [TaskRequest(name="after_order", context={"order": n}) for n in range(3)]
    with pytest.raises(RuntimeError), user_db.begin() as conn:
        backend.enqueue_many(batch, connection=conn)
        raise RuntimeError("rolled back")
    assert counts(user_db)["tasks"] == 0 and sends == []
    with user_db.begin() as conn:
        bad = [*batch, TaskRequest(name="after_order", context={"order": "x"})]
        with pytest.raises(ContextValidationError) as info:
            backend.enqueue_many(bad, connection=conn)
        assert info.value.request_index == 3
        tasks = backend.enqueue_many(batch, connection=conn)
        conn.execute(sa.text("INSERT INTO orders VALUES (1, 'batch')"))
    ids = [t.task_id for t in tasks]
    assert sends == [(ids, sorted(ids))]
    assert counts(user_db)["tasks"] == 3 and counts(user_db)["orders"] == 1
    backend.run_until_idle()
    assert {backend.get_task(i).status for i in ids} == {"complete"}


@pytest.mark.redis
def test_over_redis_only_a_committed_task_has_a_message(backend_url, redis_url, clock, clean_env):
    """Given the Redis broker, when one transaction enqueuing a task rolls back and another
    commits, then Redis holds exactly the committed task's message, and it runs."""
    queue = f"tasker_{uuid.uuid4().hex[:12]}"
    app = Tasker(database_url=backend_url, broker_url=redis_url, clock=clock, queue_name=queue)
    client = redis.Redis.from_url(redis_url)
    engine = sa.create_engine(backend_url)
    try:
        app.migrate()
        app.register(plain())
        with pytest.raises(RuntimeError), engine.begin() as conn:
            app.enqueue(TaskRequest(name="after_order"), connection=conn)
            raise RuntimeError("rolled back")
        assert app.relay is not None and app.relay.flush()
        assert client.hlen(f"dramatiq:{queue}.msgs") == 0
        with engine.begin() as conn:
            task = app.enqueue(TaskRequest(name="after_order"), connection=conn)
            assert app.relay.flush() and client.hlen(f"dramatiq:{queue}.msgs") == 0
        assert app.relay.flush()
        assert client.hlen(f"dramatiq:{queue}.msgs") == 1
        app.run_until_idle()
        assert app.get_task(task.task_id).status == "complete"
    finally:
        engine.dispose()
        client.close()
        app.close()


@pytest.mark.postgres
def test_a_key_taken_concurrently_is_answered_and_the_transaction_goes_on(
    pg_url, clock, clean_env, monkeypatch
):
    """Given (on PostgreSQL, where an error aborts a transaction) a concurrent request
    that commits the same key between this request's look-up and its insert, when the
    request is enqueued through a caller's connection, then it answers with the winner's
    task, and the caller's transaction goes on and commits its own row."""
    app = Tasker(database_url=pg_url, clock=clock)
    engine = sa.create_engine(pg_url)
    try:
        app.migrate()
        app.register(plain())
        app.enqueue(TaskRequest(name="after_order"))  # the catalog rows exist, committed
        with engine.begin() as c:
            c.execute(sa.text("CREATE TABLE orders (order_id INTEGER NOT NULL, note TEXT)"))
        insert = app.store.insert_tasks
        winner: list[int] = []

        def racing_insert(tasks, now, caller=None):
            if not winner:  # the other request commits first, on tasker's own pool
                winner.append(insert(tasks, now)[0][0])
            return insert(tasks, now, caller)

        monkeypatch.setattr(app.store, "insert_tasks", racing_insert)
        request = TaskRequest(name="after_order", idempotency_key="raced")
        with engine.begin() as conn:
            task = app.enqueue(request, connection=conn)
            conn.execute(sa.text("INSERT INTO orders VALUES (1, 'after the race')"))
        assert [task.task_id] == winner
        assert counts(engine)["tasks"] == 2 and counts(engine)["orders"] == 1
    finally:
        engine.dispose()
        app.close()


def test_an_orm_session_connection_commits_with_the_session(backend, user_db, sends):
    """Given an ORM Session, when a task is enqueued through `session.connection()`, then
    it is sent when the session commits, and a rolled-back session leaves nothing."""
    from sqlalchemy.orm import Session

    backend.register(plain())
    with Session(user_db) as session:
        backend.enqueue(TaskRequest(name="after_order"), connection=session.connection())
        session.rollback()
    assert counts(user_db)["tasks"] == 0 and sends == []
    with Session(user_db) as session:
        session.execute(sa.text("INSERT INTO orders VALUES (3, 'orm')"))
        task = backend.enqueue(TaskRequest(name="after_order"), connection=session.connection())
        session.commit()
    assert sends == [([task.task_id], [task.task_id])]
    assert counts(user_db)["tasks"] == 1 and counts(user_db)["orders"] == 1
