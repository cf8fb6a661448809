"""Which tasks the broker still holds a message for: what the sweeper must not re-send.

A task message is a nudge, so a duplicate is harmless but not free: under a backlog,
re-sending every task whose message is merely waiting its turn doubles the queue
exactly when the workers are overloaded. The sweeper therefore re-sends a due task
only when the broker no longer holds a message for it (`held`):

- On Redis, every send records, in a hash beside the queue (`<ns>:__tasks__.<queue>`),
  the Redis id of the task's newest message and when it was sent. A message is held
  while Dramatiq still has its data: waiting in the queue or the delay queue, or
  fetched by a worker and not yet acked. Once acked (or dead-lettered) it is gone
  from Dramatiq's hashes, so it no longer counts; its consumer then forgets the entry
  (if it still names that message), in batches, to bound the index's size. Before
  answering, `held` runs Dramatiq's maintenance on the queue and its delay queue, so
  the messages of a worker that died (no heartbeat for `heartbeat_timeout`: the app
  uses `lease_seconds`, at most 30 s; a live worker sends several a second) go back
  to their queue instead of counting as held by nobody for ever. A wiped Redis
  loses the index with the messages: every task then counts as lost, as it is.
- In process (`InProcessBroker`), a count of messages per task: up on enqueue, down on
  ack or nack; a stopping worker puts the messages it had fetched back in the queue
  (Dramatiq's stub broker would drop them), so the count stays exact.

A message older than the `max_age` the caller gives never counts as held: a broker
that kept a message's data but lost track of it (a bug, an eviction) cannot strand
a task, at the price of one duplicate per `max_age` for a task waiting that long.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Collection
from typing import Any

import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.stub import StubBroker, _StubConsumer
from dramatiq.common import current_millis, dq_name, q_name
from dramatiq.errors import QueueNotFound
from dramatiq.message import Message

from tasker.transport.broker import ACTOR_NAME, WakingRedisBroker, _WakingConsumer

log = logging.getLogger("tasker.transport")

# KEYS: index. ARGV: task id, Redis message id, task id, ... Forgets each task's entry
# if it still names that message.
_FORGET = """
for i = 1, #ARGV, 2 do
    local entry = redis.call("hget", KEYS[1], ARGV[i])
    if entry and string.sub(entry, 1, #ARGV[i + 1] + 1) == ARGV[i + 1] .. "|" then
        redis.call("hdel", KEYS[1], ARGV[i])
    end
end
return 0
"""

#: Consumed messages whose records a consumer forgets in one round trip.
FORGET_BATCH = 64

# KEYS: index, queue messages, delay queue messages. ARGV: oldest sent-at (ms), task ids.
# Returns the task ids whose newest message is still held and not older than the limit.
_HELD = """
local out = {}
local oldest = tonumber(ARGV[1])
for i = 2, #ARGV do
    local entry = redis.call("hget", KEYS[1], ARGV[i])
    if entry then
        local bar = string.find(entry, "|", 1, true)
        local id = string.sub(entry, 1, bar - 1)
        local sent = tonumber(string.sub(entry, bar + 1))
        if sent >= oldest and (redis.call("hexists", KEYS[2], id) == 1
                or redis.call("hexists", KEYS[3], id) == 1) then
            out[#out + 1] = ARGV[i]
        else
            redis.call("hdel", KEYS[1], ARGV[i])
        end
    end
end
return out
"""


def task_of(message: Message[Any] | MessageProxy) -> int | None:
    """The task id a tasker message nudges (None for another actor's message)."""
    if message.actor_name != ACTOR_NAME or not message.args:
        return None
    return int(message.args[0])


class TrackingRedisBroker(WakingRedisBroker):
    """A `WakingRedisBroker` that knows which tasks it holds a message for (see module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._forget = self.client.register_script(_FORGET)
        self._held = self.client.register_script(_HELD)

    @property
    def consumer_class(self) -> type[Consumer]:
        """The class of this broker's consumers."""
        return _TrackingRedisConsumer

    def close(self) -> None:
        """Close the Redis connections (Dramatiq's Redis broker leaves them to the GC)."""
        super().close()
        self.client.connection_pool.disconnect()

    def index_key(self, queue_name: str) -> str:
        """The hash of task id -> `<Redis message id>|<sent at, ms>` of a queue."""
        return f"{self.namespace}:__tasks__.{q_name(queue_name)}"

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Enqueue as Dramatiq does, then record the message as its task's newest.

        Recorded after the send: if the send fails nothing is recorded; if the record
        fails the message counts as lost, which costs one duplicate, never a task.
        """
        sent: Message[Any] = super().enqueue(message, delay=delay)
        task_id = task_of(sent)
        if task_id is not None:
            entry = f"{sent.options['redis_message_id']}|{current_millis()}"
            self.client.hset(self.index_key(sent.queue_name), str(task_id), entry)
        return sent

    def _after_sends(self, pipe: Any, calls: list[list[Any]]) -> None:
        """Record each message of a batch (`enqueue_many`) as its task's newest.

        In the batch's own pipeline, after its sends: a record whose send failed names a
        message Redis does not have, which `held` counts as lost (one duplicate at most).
        """
        now = current_millis()
        entries: dict[str, dict[Any, Any]] = {}
        for argv in calls:  # the dispatch script's argv: ..., queue, ..., message id, data
            task_id = task_of(Message.decode(argv[-1]))
            if task_id is not None:
                key = self.index_key(argv[2])
                entries.setdefault(key, {})[str(task_id)] = f"{argv[-2]}|{now}"
        for key, mapping in entries.items():
            pipe.hset(key, mapping=mapping)

    def forget(self, queue_name: str, consumed: list[tuple[int, str]]) -> None:
        """Drop the records of consumed messages where each is still its task's newest.

        Args:
            queue_name: the queue they were consumed from.
            consumed: (task id, Redis message id) of each.
        """
        if consumed:
            args = [x for pair in consumed for x in pair]
            self._forget(keys=[self.index_key(queue_name)], args=args)

    def held(self, queue: str, task_ids: Collection[int], max_age_seconds: float) -> set[int]:
        """The tasks among `task_ids` whose newest message on `queue` is still held.

        First moves the unacked messages of dead workers back to their queues.
        """
        if not task_ids:
            return set()
        self._requeue_orphans(queue)
        found = self._held(
            keys=[
                self.index_key(queue),
                f"{self.namespace}:{queue}.msgs",
                f"{self.namespace}:{dq_name(queue)}.msgs",
            ],
            args=[current_millis() - int(max_age_seconds * 1000), *sorted(task_ids)],
        )
        return {int(t) for t in found}

    def _requeue_orphans(self, queue: str) -> None:
        # Dramatiq's maintenance, which it otherwise runs on one command in a thousand.
        for name in (queue, dq_name(queue)):
            self.scripts["dispatch"](
                keys=[self.namespace],
                args=[
                    "qsize",
                    current_millis(),
                    name,
                    self.broker_id,
                    self.heartbeat_timeout,
                    self.dead_message_ttl,
                    1,
                    self._max_unpack_size(),  # type: ignore[no-untyped-call]
                ],
            )


class _TrackingRedisConsumer(_WakingConsumer):
    """A waking consumer that forgets the records of the messages it acked or nacked.

    Only to bound the index's size: an acked message is gone from Dramatiq's hashes,
    so `held` already sees it as not held. The records are forgotten in batches of
    `FORGET_BATCH` (and on close), so consuming costs no extra round trip per
    message; a killed worker leaves at most a batch of stale records behind.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._consumed: list[tuple[int, str]] = []
        self._consumed_lock = threading.Lock()

    def ack(self, message: MessageProxy) -> None:
        super().ack(message)  # type: ignore[no-untyped-call]
        self._note(message)

    def nack(self, message: MessageProxy) -> None:
        super().nack(message)  # type: ignore[no-untyped-call]
        self._note(message)

    def close(self) -> None:
        self._forget_consumed()
        super().close()

    def _note(self, message: MessageProxy) -> None:
        task_id = task_of(message)
        if task_id is None:
            return
        with self._consumed_lock:
            self._consumed.append((task_id, message.options["redis_message_id"]))
            full = len(self._consumed) >= FORGET_BATCH
        if full:
            self._forget_consumed()

    def _forget_consumed(self) -> None:
        with self._consumed_lock:
            consumed, self._consumed = self._consumed, []
        try:
            self.broker.forget(self.queue_name, consumed)
        except redis.RedisError:
            # Best effort: the ack itself succeeded, and a stale record only costs memory
            # (`held` checks the message itself and drops the records it finds stale).
            log.debug("could not forget %d consumed message record(s)", len(consumed))


class InProcessBroker(StubBroker):
    """Dramatiq's in-process broker, counting the messages it holds per task (see module)."""

    def __init__(self) -> None:
        super().__init__(middleware=[])
        self._counts: Counter[int] = Counter()
        self._lock = threading.Lock()

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Enqueue as Dramatiq does and count the message for its task."""
        sent: Message[Any] = super().enqueue(message, delay=delay)
        self.count(sent, 1)
        return sent

    def count(self, message: Message[Any] | MessageProxy, change: int) -> None:
        """Add `change` to the count of messages held for `message`'s task."""
        task_id = task_of(message)
        if task_id is None:
            return
        with self._lock:
            self._counts[task_id] += change
            if self._counts[task_id] <= 0:
                del self._counts[task_id]

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 100) -> Consumer:
        """A consumer of `queue_name` that keeps the counts (and requeues on shutdown).

        Raises:
            QueueNotFound: the queue was never declared.
        """
        try:
            queue = self.queues[queue_name]
        except KeyError:
            raise QueueNotFound(queue_name) from None  # type: ignore[no-untyped-call]
        return _CountingStubConsumer(
            self, queue, self.dead_letters_by_queue[queue_name], prefetch, timeout
        )

    def held(self, queue: str, task_ids: Collection[int], max_age_seconds: float) -> set[int]:
        """The tasks among `task_ids` this broker holds a message for (ages are not kept).

        Its only queue is the app's, so `queue` and `max_age_seconds` change nothing.
        """
        with self._lock:
            return {t for t in task_ids if self._counts.get(t, 0) > 0}


class _CountingStubConsumer(_StubConsumer):
    def __init__(self, broker: InProcessBroker, *args: Any) -> None:
        super().__init__(*args)  # type: ignore[no-untyped-call]
        self._broker = broker

    def ack(self, message: MessageProxy) -> None:
        super().ack(message)  # type: ignore[no-untyped-call]
        self._broker.count(message, -1)

    def nack(self, message: MessageProxy) -> None:
        super().nack(message)  # type: ignore[no-untyped-call]
        self._broker.count(message, -1)

    def requeue(self, messages: Any) -> None:
        # Messages a stopping worker fetched but did not run go back where they were.
        for message in messages:
            self.queue.put(message.encode())
            self.queue.task_done()
            self.prefetch_semaphore.release()
