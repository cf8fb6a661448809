"""The Redis broker's wake-up: an idle consumer waits on a wake-up list, not a poll timer.

Each test gets a flushed Redis db 11 (15 is the other integration tests', 14 test_worker's,
13 the chaos test's, 12 the benchmark's) and a fresh broker; the bounds on pick-up time are
behavioural (far under the consumer's timeout), not benchmarks.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq.common import dq_name

from tasker.transport.broker import WAKE_TOKENS_KEPT, WakingRedisBroker, make_broker

pytestmark = pytest.mark.redis

REDIS_DB = 11
BROKER_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    """Redis db 11, flushed before and after the test."""
    c = redis.Redis.from_url(BROKER_URL, socket_connect_timeout=5, socket_timeout=5)
    try:
        c.ping()
    except redis.RedisError as exc:
        c.close()
        pytest.fail(f"Redis is unreachable at {BROKER_URL} ({exc})", pytrace=False)
    c.flushdb()
    yield c
    c.flushdb()
    c.close()


@pytest.fixture
def broker(client: redis.Redis) -> Iterator[WakingRedisBroker]:
    b = make_broker(BROKER_URL)
    assert isinstance(b, WakingRedisBroker)
    yield b
    b.close()
    b.client.connection_pool.disconnect()


@pytest.fixture
def queue_name() -> str:
    return f"wake_{uuid.uuid4().hex[:12]}"


def message(queue_name: str, n: int = 1) -> dramatiq.Message:
    return dramatiq.Message(
        queue_name=queue_name, actor_name="noop", args=(n,), kwargs={}, options={}
    )


def wait_until_blocked(client: redis.Redis, deadline: float = 5.0) -> None:
    """Return once some client of this db is blocked in BLPOP (the consumer is waiting)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if any(
            c["cmd"] == "blpop" and "b" in c["flags"] and int(c["db"]) == REDIS_DB
            for c in client.client_list()
        ):
            return
        time.sleep(0.005)
    pytest.fail("no consumer blocked in BLPOP")


def test_an_idle_consumer_wakes_at_once_when_a_message_is_sent(broker, client, queue_name):
    """Given a consumer (timeout 5 s) blocked in next() on an empty queue, when another
    thread sends a message, then the consumer returns it well before any timeout."""
    consumer = broker.consume(queue_name, timeout=5000)
    received: queue.Queue[tuple[float, dramatiq.Message]] = queue.Queue()

    def consume() -> None:
        end = time.monotonic() + 10
        while time.monotonic() < end:
            got = next(consumer)
            if got is not None:
                received.put((time.monotonic(), got))
                return

    thread = threading.Thread(target=consume)
    thread.start()
    try:
        wait_until_blocked(client)
        sent_at = time.monotonic()
        broker.enqueue(message(queue_name, 7))
        received_at, got = received.get(timeout=10)
    finally:
        thread.join(10)
    assert got.args == (7,)
    # A consumer that missed the wake-up would see it only after its wait (a second) ends.
    assert received_at - sent_at < 0.5
    consumer.ack(got)


def test_a_consumer_with_timeout_zero_never_blocks(broker, queue_name):
    """Given an empty queue, when a consumer with timeout=0 (as Dispatch.drain uses) is
    asked for a message, then it returns None at once; after a send it returns it, then
    None at once again."""
    consumer = broker.consume(queue_name, prefetch=1000, timeout=0)
    started = time.monotonic()
    assert next(consumer) is None
    broker.enqueue(message(queue_name))
    got = next(consumer)
    assert got is not None
    consumer.ack(got)
    assert next(consumer) is None
    assert time.monotonic() - started < 0.5


def test_wake_up_tokens_are_bounded_without_consumers(broker, client, queue_name):
    """Given no consumer, when many messages are sent, then every message waits in Redis
    but the wake-up list holds no more than WAKE_TOKENS_KEPT tokens."""
    for n in range(5 * WAKE_TOKENS_KEPT):
        broker.enqueue(message(queue_name, n))
    assert client.llen(f"dramatiq:{queue_name}") == 5 * WAKE_TOKENS_KEPT
    assert client.llen(broker.wake_key(queue_name)) == WAKE_TOKENS_KEPT


def test_a_delayed_message_pushes_no_token(broker, client, queue_name):
    """Given no consumer, when a delayed message is sent, then it waits on the delay queue
    and no wake-up token is pushed."""
    broker.enqueue(message(queue_name), delay=60_000)
    assert client.llen(f"dramatiq:{dq_name(queue_name)}") == 1
    assert client.llen(broker.wake_key(queue_name)) == 0


def test_a_busy_consumer_takes_no_token(broker, client, queue_name):
    """Given a consumer with no prefetch room left (one unacked message, prefetch 1), when
    it is asked for another message, then it returns None after a short sleep and leaves
    the wake-up tokens to other consumers."""
    broker.enqueue(message(queue_name, 1))
    broker.enqueue(message(queue_name, 2))
    consumer = broker.consume(queue_name, prefetch=1, timeout=5000)
    first = next(consumer)
    assert first is not None
    started = time.monotonic()
    assert next(consumer) is None
    assert time.monotonic() - started < 0.5
    assert client.llen(broker.wake_key(queue_name)) == 2
    consumer.ack(first)


def test_a_delay_queue_consumer_polls_without_waiting_on_tokens(broker, client, queue_name):
    """Given wake-up tokens and an empty delay queue, when its consumer (timeout 5 s) is
    asked for a message, then it returns None after Dramatiq's short first sleep and takes
    no token."""
    broker.enqueue(message(queue_name))
    consumer = broker.consume(dq_name(queue_name), timeout=5000)
    started = time.monotonic()
    assert next(consumer) is None
    assert time.monotonic() - started < 0.5
    assert client.llen(broker.wake_key(queue_name)) == 1


def test_a_send_still_works_after_redis_lost_its_scripts(broker, client, queue_name):
    """Given Redis's script cache flushed (as after a restart), when a message is sent, then
    it is enqueued (the script is loaded again) and a consumer gets it."""
    client.script_flush()
    broker.enqueue(message(queue_name, 3))
    consumer = broker.consume(queue_name, timeout=0)
    got = next(consumer)
    assert got is not None
    assert got.args == (3,)
    consumer.ack(got)


def worker_with_actor(
    broker: WakingRedisBroker, queue_name: str, worker_timeout: int
) -> tuple[dramatiq.Worker, dramatiq.Actor, queue.Queue[tuple[float, int]]]:
    done: queue.Queue[tuple[float, int]] = queue.Queue()

    def record(n: int) -> None:
        done.put((time.monotonic(), n))

    actor = dramatiq.Actor(
        record, broker=broker, actor_name="record", queue_name=queue_name, priority=0, options={}
    )
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=worker_timeout)
    return worker, actor, done


def test_an_idle_worker_runs_a_message_well_under_its_timeout(broker, client, queue_name):
    """Given a Dramatiq worker with worker_timeout=5000 that is idle (its consumer waits),
    when a message is sent, then the actor runs well under the timeout; and the worker
    still stops."""
    worker, actor, done = worker_with_actor(broker, queue_name, 5000)
    worker.start()
    try:
        wait_until_blocked(client)
        sent_at = time.monotonic()
        actor.send(1)
        ran_at, n = done.get(timeout=10)
    finally:
        worker.stop(timeout=10_000)
    assert n == 1
    assert ran_at - sent_at < 0.5
    assert client.llen(f"dramatiq:{queue_name}") == 0


def test_a_worker_runs_a_delayed_message_once_due(broker, client, queue_name):
    """Given an idle worker (worker_timeout=100, as tasker's), when a message delayed by
    0.3 s is sent, then the actor runs it once due, not before; and the worker stops
    within about its timeout."""
    worker, actor, done = worker_with_actor(broker, queue_name, 100)
    worker.start()
    try:
        wait_until_blocked(client)
        sent_at = time.monotonic()
        actor.send_with_options(args=(2,), delay=300)
        ran_at, n = done.get(timeout=10)
    finally:
        stopping = time.monotonic()
        worker.stop(timeout=10_000)
        stopped_in = time.monotonic() - stopping
    assert n == 2
    assert 0.3 <= ran_at - sent_at < 5
    assert stopped_in < 2


def test_a_consumer_that_drained_the_queue_waits_for_a_token_before_fetching(
    broker, client, queue_name
):
    """Given a consumer whose fetch returned fewer messages than it had room for,
    when it is asked for more, then it does not fetch until a token woke it; and a
    message sent after that is still delivered."""
    consumer = broker.consume(queue_name, prefetch=4, timeout=1000)
    fetches = []
    real_fetch = broker.do_fetch

    def counting_fetch(*args):
        fetches.append(args)
        return real_fetch(*args)

    broker.do_fetch = counting_fetch
    broker.enqueue(message(queue_name, 1))
    first = next(consumer)
    assert first is not None and first.args == (1,)
    consumer.ack(first)
    assert len(fetches) == 1
    client.delete(broker.wake_key(queue_name))  # the first message's token is spent
    started = time.monotonic()
    threading.Timer(0.2, broker.enqueue, args=(message(queue_name, 2),)).start()
    assert next(consumer) is None  # woken by the second message's token, without a fetch
    assert 0.1 < time.monotonic() - started < 0.9
    assert len(fetches) == 1
    second = next(consumer)
    assert second is not None and second.args == (2,)
    consumer.ack(second)
    consumer.close()
