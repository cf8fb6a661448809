"""Dramatiq glue: the broker, the one actor, and sending task messages.

A message carries only a task id: it is a nudge. The database says what to do.
The broker has no Retries or TimeLimit middleware: tasker retries steps and
limits their time itself, so Dramatiq never re-runs or kills an engine pass.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import dramatiq
from dramatiq.broker import Broker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name

ACTOR_NAME = "tasker_run_task"


def make_broker(url: str | None) -> Broker:
    """A Redis broker for `redis://` URLs, else Dramatiq's in-process `StubBroker`."""
    if url is None:
        return StubBroker(middleware=[])
    from dramatiq.brokers.redis import RedisBroker

    return RedisBroker(url=url, middleware=[], heartbeat_timeout=30_000)  # type: ignore[no-untyped-call]


class Dispatch:
    """Sends task messages through one broker and actor."""

    def __init__(
        self,
        broker: Broker,
        queue_name: str,
        run: Callable[[int], None],
        clock: Callable[[], datetime],
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
        self.sent = 0

    def send(self, task_id: int, at: datetime | None = None) -> None:
        """Send a nudge for `task_id`, delayed until `at` (by the app's clock) if later."""
        delay_ms = 0
        if at is not None:
            delay_ms = int((at - self._clock()).total_seconds() * 1000)
        if delay_ms > 0:
            self.actor.send_with_options(args=(task_id,), delay=delay_ms)
        else:
            self.actor.send(task_id)
        self.sent += 1

    def drain(self) -> list[int]:
        """Take every waiting message (delayed ones too) off this broker's queues; ack them.

        Used by `run_until_idle`: the task ids of undelayed messages are returned;
        delayed ones are dropped, as the database already knows when they are due.
        """
        ids: list[int] = []
        for name, keep in ((self.queue_name, True), (dq_name(self.queue_name), False)):
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

    def close(self) -> None:
        """Close the broker's connections."""
        self.broker.close()
