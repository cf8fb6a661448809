"""The app on the real Redis broker: messages go through Redis, and losing them is harmless."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa
from integration_support import task_class

from tasker import StepTemplate, Tasker, TaskRequest, errors
from tasker.store import schema as m

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
    assert app.relay is not None and app.relay.flush()
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
    # enqueue's message goes out on the relay thread: sent once flushed, as
    # run_until_idle flushes before it drains (unflushed, a loaded machine drains first)
    assert app.relay is not None and app.relay.flush()
    assert app.dispatch.drain() == [task.task_id]
    assert client.hlen(delayed) == 1
    assert client.llen(f"dramatiq:{app.settings.queue_name}.DQ") == 1


def _messages(client, app):
    return client.hlen(f"dramatiq:{app.settings.queue_name}.msgs")


def _noop_task(app, name):
    app.register(task_class(name, [StepTemplate(name="s", handler=lambda t, q, s: {})]))


def test_the_relay_sends_a_message_only_after_its_task_was_committed(app, client, backend_url):
    """Given the Redis broker, when tasks are enqueued, then enqueue returns before the
    message is sent (by the relay thread), and when each message is sent its task is
    already visible to another connection: committed."""
    _noop_task(app, "committed_first")
    other = sa.create_engine(app.db.url)
    seen: list[tuple[list[int], int]] = []
    send_many = app.dispatch.broker.enqueue_many

    def checking(messages):
        ids = [int(msg.args[0]) for msg in messages]
        with other.connect() as conn:
            stored = conn.execute(
                sa.select(sa.func.count()).select_from(m.tasks).where(m.tasks.c.task_id.in_(ids))
            ).scalar_one()
        seen.append((ids, stored))
        send_many(messages)

    app.dispatch.broker.enqueue_many = checking
    try:
        ids = [app.enqueue(TaskRequest(name="committed_first")).task_id for _ in range(3)]
        assert app.relay is not None and app.relay.flush()
    finally:
        other.dispose()
    assert sorted(i for batch, _ in seen for i in batch) == ids
    assert all(stored == len(batch) for batch, stored in seen)
    assert _messages(client, app) == 3
    app.run_until_idle()
    assert {app.get_task(i).status for i in ids} == {"complete"}


def test_a_message_lost_between_commit_and_send_is_re_sent_by_the_sweeper(app, client, clock):
    """Given a relay whose send fails (the process "died" after the commit), when the
    task is enqueued, then no message reaches Redis but the outbox row stays; a sweep
    after the grace period sends it, and the task then runs to completion."""
    _noop_task(app, "lost_send")

    def broken(messages):
        raise redis.ConnectionError("gone")

    app.dispatch.broker.enqueue_many = broken
    task = app.enqueue(TaskRequest(name="lost_send"))
    assert app.relay is not None and app.relay.flush()
    assert _messages(client, app) == 0
    del app.dispatch.broker.enqueue_many  # the broker is back

    clock.advance(app.settings.sweep_seconds + 1)
    assert app.sweeper.sweep() == 1
    assert _messages(client, app) == 1
    app.run_until_idle()
    assert app.get_task(task.task_id).status == "complete"


def test_stop_sends_the_messages_the_relay_still_holds(app, client):
    """Given a relay whose first send is held while two more tasks are enqueued, when the
    app stops (and the send is let go), then all three messages are in Redis."""
    _noop_task(app, "held")
    gate, entered = threading.Event(), threading.Event()
    send_many = app.dispatch.broker.enqueue_many

    def held(messages):
        entered.set()
        gate.wait(10)
        send_many(messages)

    app.dispatch.broker.enqueue_many = held
    app.enqueue(TaskRequest(name="held"))
    assert entered.wait(10)
    app.enqueue(TaskRequest(name="held"))
    app.enqueue(TaskRequest(name="held"))
    threading.Timer(0.1, gate.set).start()
    app.stop()
    assert _messages(client, app) == 3


def test_enqueue_many_sends_its_messages_in_one_pipeline(app, client):
    """Given the Redis broker, when three tasks are enqueued at once, then the relay sends
    their three messages in one call (one pipeline), and each task then runs."""
    _noop_task(app, "bulk")
    calls: list[int] = []
    send_many = app.dispatch.broker.enqueue_many

    def counting(messages):
        calls.append(len(messages))
        send_many(messages)

    app.dispatch.broker.enqueue_many = counting
    views = app.enqueue_many([TaskRequest(name="bulk") for _ in range(3)])
    assert app.relay is not None and app.relay.flush()
    assert calls == [3]
    assert _messages(client, app) == 3
    app.run_until_idle()
    assert {app.get_task(v.task_id).status for v in views} == {"complete"}


SCRIPT = """
import sys, time
from tasker import StepTemplate, Tasker, TaskHandler, TaskRequest

class Quick(TaskHandler):
    name = "quick"
    step_templates = [StepTemplate(name="s", handler=lambda t, q, s: {})]

app = Tasker(database_url=sys.argv[1], broker_url=sys.argv[2], queue_name=sys.argv[3])
app.register(Quick)
send_many = app.dispatch.broker.enqueue_many

def slow(messages):  # the relay is still sending when the script's last line is done
    time.sleep(0.3)
    send_many(messages)

app.dispatch.broker.enqueue_many = slow
for _ in range(3):
    app.enqueue(TaskRequest(name="quick"))
print("enqueued")  # and exits without close()
"""


def test_a_process_that_exits_without_close_still_sends_its_messages(
    app, client, backend_url, redis_url, tmp_path
):
    """Given a script that enqueues three tasks over Redis and exits without close()
    while the relay is still sending, when it has exited, then all three messages are in
    Redis: the interpreter's exit flushes the relay."""
    import subprocess
    import sys

    script = tmp_path / "enqueue_and_exit.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), backend_url, redis_url, app.settings.queue_name],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert _messages(client, app) == 3
