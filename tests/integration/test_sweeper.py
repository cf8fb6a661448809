"""The sweeper re-sends what is lost, never what is merely queued (issue 8, defect 5).

On the in-process broker and on the real Redis: a task whose message waits its turn
(a backlog) gets no second message however long it waits; one whose message is lost
(a wiped Redis, a message taken and dropped) is re-sent; a dead worker's unacked
message goes back to the queue; a message older than the limit counts as lost.
"""

from __future__ import annotations

import uuid

import pytest
import redis
import sqlalchemy as sa
from integration_support import task_class

from tasker import StepTemplate, Tasker, TaskRequest, errors
from tasker.store import schema as m
from tasker.transport.held import TrackingRedisBroker


def _noop(task, sequence, step):
    return {}


def _outbox_rows(app: Tasker) -> int:
    with app.db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(m.outbox)).scalar() or 0)


def _sent(app: Tasker) -> None:
    """Wait until the messages of the tasks enqueued so far were sent (the relay)."""
    if app.relay is not None:
        app.relay.flush()


def _backlog(app: Tasker, clock, n: int = 3) -> list[int]:
    """`n` tasks whose messages wait in the broker, well past the outbox grace period
    and past several lease periods, swept all along."""
    app.register(task_class("queued", [StepTemplate(name="s", handler=_noop)]))
    ids = [app.enqueue(TaskRequest(name="queued")).task_id for _ in range(n)]
    _sent(app)
    sent = 0
    for _ in range(4):
        clock.advance(app.settings.sweep_seconds + 1)
        sent += app.sweeper.sweep()
    clock.advance(app.settings.lease_seconds + 1)
    sent += app.sweeper.sweep()
    clock.advance(app.settings.lease_seconds + 1)
    sent += app.sweeper.sweep()
    assert sent == 0, "the sweeper re-sent tasks whose messages were only queued"
    return ids


def test_a_backlog_gets_no_duplicate_messages_in_process(backend, clock):
    """Given tasks whose messages wait in the in-process broker longer than the grace
    period and than lease_seconds, when sweeps run all along, then none is re-sent and
    their outbox rows are cleared; when the queue is then consumed, each task completes
    from its one message."""
    ids = _backlog(backend, clock)
    assert _outbox_rows(backend) == 0
    assert sorted(backend.dispatch.drain()) == ids  # exactly one message each
    backend.run_until_idle()
    assert {backend.get_task(i).status for i in ids} == {"complete"}


def test_a_queued_message_that_is_then_lost_is_re_sent_once(backend, clock):
    """Given a backlogged task the sweeper saw as queued, when its message is lost
    (taken off the queue and dropped), then the next sweep after lease_seconds re-sends
    it once, and the one after that sends nothing more while the new message waits."""
    ids = _backlog(backend, clock, n=1)
    assert backend.dispatch.drain() == ids  # lost: taken and never run
    clock.advance(backend.settings.lease_seconds + 1)
    assert backend.sweeper.sweep() == 1
    clock.advance(backend.settings.lease_seconds + 1)
    assert backend.sweeper.sweep() == 0
    assert backend.dispatch.drain() == ids
    backend.run_until_idle()
    assert backend.get_task(ids[0]).status == "complete"


def test_a_stopping_worker_puts_back_the_messages_it_had_not_run(make_app):
    """Given an in-process worker started and stopped on a backlog, then every task is
    either done or still held by the broker (the worker put back what it had fetched),
    so nothing is left that neither runs nor counts as lost."""
    app = make_app()
    app.register(task_class("many", [StepTemplate(name="s", handler=_noop)]))
    ids = [app.enqueue(TaskRequest(name="many")).task_id for _ in range(40)]
    app.start(threads=1, sweep=False)
    app.stop()
    pending = {i for i in ids if app.get_task(i).status != "complete"}
    assert app.dispatch.held(pending, 600) == pending


# -- on Redis --------------------------------------------------------------------------


@pytest.fixture
def app(backend_url, redis_url, clock, clean_env):
    queue = f"tasker_{uuid.uuid4().hex[:12]}"
    a = Tasker(database_url=backend_url, broker_url=redis_url, clock=clock, queue_name=queue)
    a.migrate()
    yield a
    a.close()


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.mark.redis
def test_a_backlog_gets_no_duplicate_messages_on_redis(app, client, clock):
    """Given tasks whose messages wait in Redis past the grace period and lease_seconds,
    when sweeps run, then none is re-sent; when Redis then loses everything, the next
    sweep after lease_seconds re-sends each once; consumed messages leave no record."""
    queue = app.settings.queue_name
    ids = _backlog(app, clock)
    assert client.llen(f"dramatiq:{queue}") == len(ids)
    client.flushdb()
    clock.advance(app.settings.lease_seconds + 1)
    assert app.sweeper.sweep() == len(ids)
    assert client.llen(f"dramatiq:{queue}") == len(ids)
    app.run_until_idle()
    assert {app.get_task(i).status for i in ids} == {"complete"}
    assert client.hlen(f"dramatiq:__tasks__.{queue}") == 0  # acked: forgotten


@pytest.mark.redis
def test_a_delayed_retry_waiting_in_redis_is_held(app, client, clock):
    """Given a step waiting for its retry, whose delayed message is in Redis's delay
    queue, when sweeps run past its due time, then it is not re-sent: the delayed
    message will move to the queue when due."""

    def later(task, sequence, step):
        if step.attempts == 1:
            raise errors.RetryableError("later", retry_after=30)
        return {}

    app.register(task_class("retried", [StepTemplate(name="s", handler=later)]))
    task = app.enqueue(TaskRequest(name="retried"))
    app.run_until_idle()
    assert client.hlen(f"dramatiq:{app.settings.queue_name}.DQ.msgs") == 1
    clock.advance(30 + app.settings.sweep_seconds + 1)
    assert app.sweeper.sweep() == 0
    assert app.dispatch.held([task.task_id], 600) == {task.task_id}


@pytest.mark.redis
def test_a_dead_workers_unacked_message_goes_back_to_the_queue(app, client, redis_url):
    """Given a message fetched by a worker that then died (no heartbeat since), when
    the broker is asked what it holds, then Dramatiq's maintenance has put the message
    back in the queue, where another worker takes it."""
    app.register(task_class("orphan", [StepTemplate(name="s", handler=_noop)]))
    task = app.enqueue(TaskRequest(name="orphan"))
    _sent(app)
    queue = app.settings.queue_name
    other = TrackingRedisBroker(url=redis_url, middleware=[], heartbeat_timeout=30_000)
    try:
        other.declare_queue(queue)
        consumer = other.consume(queue, prefetch=10, timeout=0)
        assert next(consumer) is not None  # fetched, never acked
        assert client.llen(f"dramatiq:{queue}") == 0
        client.zadd("dramatiq:__heartbeats__", {other.broker_id: 0})  # long dead
        assert app.dispatch.held([task.task_id], 600) == {task.task_id}
        assert client.llen(f"dramatiq:{queue}") == 1
    finally:
        consumer.close()
        other.close()
    assert app.dispatch.drain() == [task.task_id]


@pytest.mark.redis
def test_a_message_older_than_the_limit_counts_as_lost(app, client, clock):
    """Given a queued message recorded as sent long ago, when the broker is asked, then
    it does not count as held, so the sweeper re-sends the task (once)."""
    app.register(task_class("old", [StepTemplate(name="s", handler=_noop)]))
    task = app.enqueue(TaskRequest(name="old"))
    _sent(app)
    index = f"dramatiq:__tasks__.{app.settings.queue_name}"
    redis_id = client.hget(index, str(task.task_id)).decode().split("|")[0]
    client.hset(index, str(task.task_id), f"{redis_id}|0")
    assert app.dispatch.held([task.task_id], 600) == set()
    clock.advance(app.settings.sweep_seconds + 1)
    assert app.sweeper.sweep() == 1


@pytest.mark.redis
def test_messages_sent_in_a_batch_are_held_too(app, client):
    """Given nudges sent in one batch (the relay's `send_many`), then each task counts as
    held until its message is consumed, and not after."""
    app.register(task_class("batched", [StepTemplate(name="s", handler=_noop)]))
    ids = [app.enqueue(TaskRequest(name="batched")).task_id for _ in range(3)]
    _sent(app)
    app.dispatch.drain()
    assert app.dispatch.held(ids, 600) == set()
    app.dispatch.send_many(ids)
    assert app.dispatch.held(ids, 600) == set(ids)
    assert sorted(app.dispatch.drain()) == ids
    assert app.dispatch.held(ids, 600) == set()
