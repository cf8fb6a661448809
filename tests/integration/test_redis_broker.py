"""The app on the real Redis broker: messages go through Redis, and losing them is harmless."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import redis
from integration_support import task_class

from tasker import StepTemplate, Tasker, TaskRequest, errors

pytestmark = pytest.mark.redis


@pytest.fixture
def app(backend_url, redis_url, clock, clean_env):
    # A queue of the test's own: another run sharing Redis db 15 cannot add messages to it.
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


def test_a_task_message_goes_through_redis_and_the_task_runs(app, client):
    """Given the Redis broker, when a task is enqueued, then its message waits in Redis;
    when run_until_idle runs, then it is consumed and the task completes."""
    app.register(task_class("via_redis", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    task = app.enqueue(TaskRequest(name="via_redis"))
    assert client.hlen(f"dramatiq:{app.settings.queue_name}.msgs") == 1
    app.run_until_idle()
    assert app.get_task(task.task_id).status == "complete"
    assert client.hlen(f"dramatiq:{app.settings.queue_name}.msgs") == 0


def test_tasks_survive_a_wiped_redis(app, client, clock):
    """Given tasks whose messages (immediate and delayed) are wiped from Redis,
    when run_until_idle runs at the right times, then every task still completes."""
    calls = []

    def fails_once(task, sequence, step):
        calls.append(step.attempts)
        if step.attempts == 1:
            raise errors.RetryableError("later", retry_after=30)
        return {}

    app.register(task_class("wiped", [StepTemplate(name="s", handler=fails_once)]))
    app.register(task_class("plain", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    first = app.enqueue(TaskRequest(name="wiped"))
    second = app.enqueue(TaskRequest(name="plain"))
    client.flushdb()
    app.run_until_idle()
    assert app.get_task(second.task_id).status == "complete"
    assert calls == [1]
    client.flushdb()  # the delayed message for the retry
    clock.advance(31)
    app.run_until_idle()
    assert calls == [1, 2]
    assert app.get_task(first.task_id).status == "complete"


def test_drain_leaves_the_shared_delay_queue_alone(app, client, clock):
    """Given a delayed message (another worker's retry, say) waiting in Redis's delay queue
    and an immediate one, when run_until_idle drains the queue, then the immediate message
    is taken and the delayed one is still in the delay queue, untouched."""
    app.register(task_class("later", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    task = app.enqueue(TaskRequest(name="later"))
    app.dispatch.send(task.task_id, at=clock() + timedelta(seconds=60))
    delayed = f"dramatiq:{app.settings.queue_name}.DQ.msgs"
    assert client.hlen(delayed) == 1
    assert app.dispatch.drain() == [task.task_id]
    assert client.hlen(delayed) == 1
    assert client.llen(f"dramatiq:{app.settings.queue_name}.DQ") == 1
