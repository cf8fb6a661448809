"""Dramatiq glue: the broker, the one actor, and sending task messages.

A message carries only a task id: it is a nudge. The database says what to do.
The broker has no Retries or TimeLimit middleware: tasker retries steps and
limits their time itself, so Dramatiq never re-runs or kills an engine pass.
On Redis, an idle consumer blocks until a send wakes it instead of polling with
a growing sleep, so a message is picked up at once without burning CPU when idle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any
from uuid import uuid4

import dramatiq
import redis
from dramatiq.broker import Broker, Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from tasker.engine.observer import Observer

ACTOR_NAME = "tasker_run_task"

WAKE_TOKENS_KEPT = 8
"""Most wake-up tokens a queue keeps for consumers about to wait; the rest are trimmed."""

# Under redis-py's default 5 s socket timeout, so a wait never times out the socket.
_MAX_WAIT_SECONDS = 1.0


def make_broker(url: str | None, heartbeat_seconds: float = 30.0) -> Broker:
    """A Redis broker for `redis://` URLs, else an in-process one; both know what they hold.

    See `tasker.transport.held`: the sweeper re-sends only what they no longer hold.

    Args:
        url: the Redis URL, or None for the in-process broker.
        heartbeat_seconds: on Redis, how long a worker may go without a heartbeat (every
            worker process sends several a second) before it is presumed dead and the
            messages it had fetched go back to the queue.
    """
    from tasker.transport.held import InProcessBroker, TrackingRedisBroker

    if url is None:
        return InProcessBroker()
    return TrackingRedisBroker(
        url=url, middleware=[], heartbeat_timeout=int(heartbeat_seconds * 1000)
    )


def _is_delay_queue(queue_name: str) -> bool:
    return dq_name(queue_name) == queue_name


class WakingRedisBroker(RedisBroker):
    """A `RedisBroker` whose idle consumers wait for a wake-up instead of polling.

    Each message sent to an immediate queue also pushes a token onto the queue's
    wake-up list, in the same round trip. A consumer that fetches nothing waits on
    that list with `BLPOP` (up to its timeout, at most a second), so it fetches
    again as soon as a message arrives. Delayed messages push no token: the worker
    wakes the queue when it moves them, once due, to the immediate queue. Delay
    queues are polled as Dramatiq does.
    """

    @property
    def consumer_class(self) -> type[Consumer]:
        """The class of this broker's consumers."""
        return _WakingConsumer

    def wake_key(self, queue_name: str) -> str:
        """The Redis list whose tokens wake the consumers of `queue_name`."""
        return f"{self.namespace}:__wake__.{queue_name}"

    def do_enqueue(self, queue_name: str, *args: Any) -> Any:
        """Run Dramatiq's enqueue script, with a wake-up token for an immediate queue.

        Args:
            queue_name: The queue (a delay queue gets no token).
            *args: The script's enqueue arguments: the Redis message id and its data.

        Returns:
            The script's result.
        """
        script = self.scripts["dispatch"]
        argv = [
            "enqueue",
            current_millis(),
            queue_name,
            self.broker_id,
            self.heartbeat_timeout,
            self.dead_message_ttl,
            self._should_do_maintenance("enqueue"),
            self._max_unpack_size(),  # type: ignore[no-untyped-call]
            *args,
        ]
        if _is_delay_queue(queue_name):
            return script(keys=[self.namespace], args=argv)
        try:
            return self._enqueue_and_wake(script.sha, argv, self.wake_key(queue_name))
        except redis.exceptions.NoScriptError:
            # Redis lost its script cache (a restart, SCRIPT FLUSH); a second token is harmless.
            self.client.script_load(script.script)
            return self._enqueue_and_wake(script.sha, argv, self.wake_key(queue_name))

    def enqueue_many(self, messages: Sequence[Message[Any]]) -> None:
        """Enqueue undelayed messages in one round trip: one pipeline, tokens included.

        Each message gets its own Redis message id, as `enqueue` gives it; every queue
        sent to gets a wake-up token per message (at most `WAKE_TOKENS_KEPT`).
        """
        if not messages:
            return
        script = self.scripts["dispatch"]
        calls: list[list[Any]] = []
        tokens: dict[str, int] = {}
        for original in messages:
            message = original.copy(options={"redis_message_id": str(uuid4())})
            self.emit_before("enqueue", message, None)
            queue = message.queue_name
            calls.append(
                [
                    "enqueue",
                    current_millis(),
                    queue,
                    self.broker_id,
                    self.heartbeat_timeout,
                    self.dead_message_ttl,
                    self._should_do_maintenance("enqueue"),
                    self._max_unpack_size(),  # type: ignore[no-untyped-call]
                    message.options["redis_message_id"],
                    message.encode(),
                ]
            )
            tokens[queue] = tokens.get(queue, 0) + 1
        try:
            self._pipeline(script.sha, calls, tokens)
        except redis.exceptions.NoScriptError:
            # As in `do_enqueue`: every call of the batch failed alike, so none was sent.
            self.client.script_load(script.script)
            self._pipeline(script.sha, calls, tokens)

    def _pipeline(self, sha: str, calls: list[list[Any]], tokens: dict[str, int]) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for argv in calls:
                pipe.evalsha(sha, 1, self.namespace, *argv)
            for queue, n in tokens.items():
                pipe.rpush(self.wake_key(queue), *([1] * min(n, WAKE_TOKENS_KEPT)))
                pipe.ltrim(self.wake_key(queue), -WAKE_TOKENS_KEPT, -1)
            self._after_sends(pipe, calls)
            pipe.execute()

    def _after_sends(self, pipe: Any, calls: list[list[Any]]) -> None:
        """Add commands to a batch's pipeline, after its sends (`calls`: their argv)."""

    def _enqueue_and_wake(self, sha: str, argv: list[Any], wake_key: str) -> Any:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.evalsha(sha, 1, self.namespace, *argv)
            pipe.rpush(wake_key, 1)
            pipe.ltrim(wake_key, -WAKE_TOKENS_KEPT, -1)
            return pipe.execute()[0]


class _WakingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, waiting on the wake-up list where it would sleep idle.

    A fetch that returned less than it asked for saw the queue empty; every message
    sent since pushed a token, so the consumer waits for one before fetching again
    instead of fetching once more for nothing.
    """

    drained = False  # the last fetch found the queue empty

    def __next__(self) -> MessageProxy | None:
        room = self.prefetch - self.outstanding_message_count
        # A busy consumer keeps Dramatiq's sleep: a token it took would be one an idle
        # consumer elsewhere misses.
        if (
            not self.message_cache
            and room > 0
            and self.timeout > 0
            and not _is_delay_queue(self.queue_name)
        ):
            try:
                if self.drained:
                    self.drained = False
                    self._wait_for_wake_up()
                    return None
                self.message_cache = self.broker.do_fetch(self.queue_name, room)
                if not self.message_cache:
                    self._wait_for_wake_up()
                    return None
                self.drained = len(self.message_cache) < room
            except redis.ConnectionError as e:
                raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]
        return super().__next__()  # type: ignore[no-untyped-call,no-any-return]

    def _wait_for_wake_up(self) -> None:
        key = self.broker.wake_key(self.queue_name)
        # A read timeout (a socket_timeout under the wait) is a wait that got no token.
        with contextlib.suppress(redis.TimeoutError):
            self.broker.client.blpop([key], min(self.timeout / 1000, _MAX_WAIT_SECONDS))


class Dispatch:
    """Sends task messages through one broker and actor."""

    def __init__(
        self,
        broker: Broker,
        queue_name: str,
        run: Callable[[int], None],
        clock: Callable[[], datetime],
        observer: Observer | None = None,
    ) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self._clock = clock
        self.actor: dramatiq.Actor[[int], None] = dramatiq.Actor(
            run,
            broker=broker,
            actor_name=ACTOR_NAME,
            queue_name=queue_name,
            priority=0,
            options={"max_retries": 0},
        )
        self._observer = observer or Observer()

    def send(self, task_id: int, at: datetime | None = None) -> None:
        """Send a nudge for `task_id`, delayed until `at` (by the app's clock) if later."""
        delay_ms = 0
        if at is not None:
            delay_ms = int((at - self._clock()).total_seconds() * 1000)
        if delay_ms > 0:
            self.actor.send_with_options(args=(task_id,), delay=delay_ms)
        else:
            self.actor.send(task_id)
        self._observer.on_messages_sent(1)

    @property
    def remote(self) -> bool:
        """Whether messages go over the network (Redis), not to the in-process broker."""
        return isinstance(self.broker, WakingRedisBroker)

    def send_many(self, task_ids: Sequence[int]) -> None:
        """Send an undelayed nudge for each task id, in one round trip on Redis."""
        if isinstance(self.broker, WakingRedisBroker):
            self.broker.enqueue_many([self.actor.message(i) for i in task_ids])
        else:
            for task_id in task_ids:
                self.actor.send(task_id)
        self._observer.on_messages_sent(len(task_ids))

    def drain(self) -> list[int]:
        """Take every waiting undelayed message off this broker's queue; ack them.

        Used by `run_until_idle`, which returns the task ids to run. Delayed messages
        are left where they are on Redis, where other workers share the delay queue
        (the database knows when each task is due, so nothing waits on them here).
        On the in-process broker, which no other process shares, the delayed ones
        are taken and dropped, so they do not pile up in memory.

        Returns:
            The task ids of the undelayed messages taken, in queue order.
        """
        queues = [(self.queue_name, True)]
        if isinstance(self.broker, StubBroker):
            queues.append((dq_name(self.queue_name), False))
        ids: list[int] = []
        for name, keep in queues:
            consumer = self.broker.consume(name, prefetch=1000, timeout=0)
            try:
                while True:
                    message = next(consumer)
                    if message is None:
                        break
                    consumer.ack(message)
                    if keep:
                        ids.append(int(message.args[0]))
            finally:
                consumer.close()
        return ids

    def held(self, task_ids: Collection[int], max_age_seconds: float) -> set[int]:
        """The tasks among `task_ids` whose newest message the broker still holds.

        Held: waiting (delayed or not) or taken by a live worker and not yet acked.
        A message sent longer than `max_age_seconds` ago never counts as held. A broker
        that cannot tell holds nothing (so everything asked about is re-sent).
        """
        held = getattr(self.broker, "held", None)
        if held is None or not task_ids:
            return set()
        return set(held(self.queue_name, task_ids, max_age_seconds))

    def close(self) -> None:
        """Close the broker's connections."""
        self.broker.close()
