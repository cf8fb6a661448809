"""Observers: one hook through which the engine reports what it does.

In the style of Dramatiq's middleware: an `Observer` has one method per event, each a
no-op by default; `Tasker.observe(observer)` adds one, and the app calls every
observer added, in order, at each event (`Observers`). Prometheus metrics
(`tasker.web.worker_metrics`), OpenTelemetry tracing (`tasker.engine.tracing`) and
the benchmarks' counts (`Counts`) are observers.

An observer's method runs on the engine's own threads, in the middle of its work: it
must be quick and must not raise (what one raises is logged and dropped, so a broken
observer never fails a task). The attempt events run on the step's own thread, around
the handler's call, so a context an observer makes current there (a tracing span) is
current inside the handler.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from tasker.errors import ConfigurationError

log = logging.getLogger("tasker.observer")


class Observer:
    """What the engine reports; subclass and override the events you want.

    Every method is a no-op here. Names: `task` is the task's registered name, `step`
    the step's name.
    """

    def before_enqueue(self, names: Sequence[str]) -> None:
        """An `enqueue` (or `enqueue_many`) call of tasks of these names begins.

        Called on the caller's thread: what an observer makes current here (a tracing
        span) is current while the tasks are built, and `tasker.engine.tracing` stores
        the trace context then current with each task.
        """

    def after_enqueue(self, task_ids: Sequence[int], error: BaseException | None) -> None:
        """The call that `before_enqueue` announced returned these tasks, or raised `error`."""

    def on_pass_started(
        self, task_id: int, task: str, due_at: datetime | None, now: datetime, trace: str | None
    ) -> None:
        """A worker claimed the task and starts a pass over it.

        Args:
            due_at: when the task was due (its `next_run_at`): `now - due_at` is how long it
                waited in the queue.
            trace: the trace context stored with the task (`tasker.engine.tracing`).
        """

    def on_pass_finished(self, task_id: int, task: str, error: BaseException | None) -> None:
        """The pass over the task ended (finished the task, released it, or failed)."""

    def on_attempt_started(self, task_id: int, task: str, step: str, attempt: int) -> None:
        """An attempt of a step starts; called on the step's thread, before its handler."""

    def on_attempt_finished(
        self,
        task_id: int,
        task: str,
        step: str,
        ok: bool,
        flow: str | None,
        seconds: float,
        error: dict[str, Any] | None,
    ) -> None:
        """An attempt returned; called on the step's thread, before its outcome is recorded.

        Args:
            ok: it returned results; False: it raised (a failed attempt) or asked for flow
                control (`flow`: "reattempt", "skip", "pause", "cancel"; not a failure).
            seconds: how long the attempt ran.
            error: what it raised, as stored (`message`, `error_class`, `backtrace`).
        """

    def on_lease_lost(self, task_id: int) -> None:
        """A pass lost its task's lease (another worker took it over, or it expired)."""

    def on_sweeper_resend(self, sent: int, still_queued: int) -> None:
        """A sweep re-sent `sent` messages; `still_queued` due tasks still had theirs."""

    def on_messages_sent(self, count: int) -> None:
        """This process sent `count` task messages to the broker."""

    def on_limit_wait(self, task: str, step: str, system: str) -> None:
        """A step waits for a free place under its dependent system's limit."""


_EVENTS = tuple(
    name
    for name in vars(Observer)
    if name.startswith(("on_", "after_", "before_")) and callable(getattr(Observer, name))
)


def _nothing(*_: Any) -> None:
    return None


class Observers(Observer):
    """The observers of an app, called in order.

    Each event calls only the observers that override its method: an event no one
    observes is a call of a no-op. One that raises is logged (once per observer and
    event) and the others still run.
    """

    def __init__(self) -> None:
        self._all: tuple[Observer, ...] = ()
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._wire()

    @property
    def active(self) -> bool:
        """Whether any observer was added (else every event is a no-op)."""
        return bool(self._all)

    def wants(self, event: str) -> bool:
        """Whether an observer overrides `event` (the engine skips work for none)."""
        return getattr(self, event) is not _nothing

    def add(self, observer: Observer) -> None:
        """Add an observer (called after those added before).

        Raises:
            ConfigurationError: it is not an `Observer`.
        """
        if not isinstance(observer, Observer):
            raise ConfigurationError(
                f"an observer must subclass tasker.Observer, got {type(observer).__name__}"
            )
        with self._lock:
            self._all = (*self._all, observer)
            self._wire()

    def remove(self, observer: Observer) -> None:
        """Remove an observer added before (no-op if it was not)."""
        with self._lock:
            self._all = tuple(o for o in self._all if o is not observer)
            self._wire()

    def _wire(self) -> None:
        for name in _EVENTS:
            base = getattr(Observer, name)
            calls = tuple(
                (o, getattr(o, name)) for o in self._all if getattr(type(o), name) is not base
            )
            setattr(self, name, self._fan_out(name, calls) if calls else _nothing)

    def _fan_out(self, name: str, calls: tuple[tuple[Observer, Any], ...]) -> Any:
        def call(*args: Any) -> None:
            for o, method in calls:
                try:
                    method(*args)
                except Exception:
                    self._failed(o, name)

        return call

    def _failed(self, o: Observer, name: str) -> None:
        key = f"{type(o).__qualname__}.{name}"
        if key not in self._warned:
            self._warned.add(key)
            log.exception("observer %s failed (logged once; the engine goes on)", key)


class Counts(Observer):
    """Counts the events, per process: for benchmarks and tests.

    Attributes:
        passes, attempts, failures, lease_losses, resent, still_queued, messages,
            limit_waits: how many of each so far.
    """

    def __init__(self) -> None:
        self.passes = self.attempts = self.failures = self.lease_losses = 0
        self.resent = self.still_queued = self.messages = self.limit_waits = 0
        self._lock = threading.Lock()  # attempts end on many threads at once

    def on_pass_started(
        self, task_id: int, task: str, due_at: datetime | None, now: datetime, trace: str | None
    ) -> None:
        """Count the pass."""
        with self._lock:
            self.passes += 1

    def on_attempt_finished(
        self,
        task_id: int,
        task: str,
        step: str,
        ok: bool,
        flow: str | None,
        seconds: float,
        error: dict[str, Any] | None,
    ) -> None:
        """Count the attempt (and the failure)."""
        with self._lock:
            self.attempts += 1
            self.failures += not ok and flow is None

    def on_lease_lost(self, task_id: int) -> None:
        """Count the lost lease."""
        with self._lock:
            self.lease_losses += 1

    def on_sweeper_resend(self, sent: int, still_queued: int) -> None:
        """Count the re-sent messages and those still queued."""
        with self._lock:
            self.resent += sent
            self.still_queued += still_queued

    def on_messages_sent(self, count: int) -> None:
        """Count the messages."""
        with self._lock:
            self.messages += count

    def on_limit_wait(self, task: str, step: str, system: str) -> None:
        """Count the wait."""
        with self._lock:
            self.limit_waits += 1


@contextmanager
def enqueuing(observer: Observers, names: Sequence[str]) -> Iterator[list[int]]:
    """Announce an enqueue call to `observer` around the block (`before_`/`after_enqueue`).

    Yields:
        A list the block fills with the ids of the tasks it enqueued.
    """
    ids: list[int] = []
    observer.before_enqueue(names)
    try:
        yield ids
    except BaseException as exc:
        observer.after_enqueue(ids, exc)
        raise
    observer.after_enqueue(ids, None)
