"""The relay: sends the messages of committed tasks from a background thread, in batches.

An enqueue commits the task together with its outbox row, so the message is already
guaranteed (the sweeper re-sends an outbox row left over by a process that died): it
does not need to be sent on the caller's path. `Relay.submit` hands the task ids to one
thread per app, started on first use, which sends whatever has piled up in one broker
round trip (`Dispatch.send_many`) and then waits for more. A failed send is logged and
left to the sweeper, like a failed send on the caller's path was.

`flush` waits until everything submitted so far was sent; `stop` flushes and ends the
thread (the next `submit` starts a new one). An interpreter that exits stops every
relay first, so a script that enqueues and exits without `close()` loses no message.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable

log = logging.getLogger("tasker")

#: Most task ids sent in one broker round trip.
BATCH = 500
#: Seconds the thread waits for more before it ends (the next `submit` starts another),
#: so an app that is dropped without `close()` does not keep a thread for ever.
IDLE_SECONDS = 10.0


class Relay:
    """Sends task messages after their commit, from one background thread, in batches.

    Args:
        send_many: sends a message for each task id, in one round trip.
        batch: most ids per call of `send_many`.
        idle_seconds: how long the thread waits for more before it ends.
    """

    def __init__(
        self,
        send_many: Callable[[list[int]], None],
        batch: int = BATCH,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self._send_many = send_many
        self._batch = batch
        self._idle = idle_seconds
        self._cond = threading.Condition()
        self._pending: list[int] = []
        self._in_flight = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        _RELAYS.add(self)

    def submit(self, task_ids: Iterable[int]) -> None:
        """Queue a message for each task id; the relay thread sends them soon."""
        ids = list(task_ids)
        with self._cond:
            if self._pid != os.getpid():  # a forked child: the parent's ids and thread are not ours
                self._pending, self._in_flight, self._thread = [], 0, None
                self._pid = os.getpid()
            self._pending.extend(ids)
            if self._thread is None:
                self._stopping = False
                thread = threading.Thread(target=self._run, name="tasker-relay", daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # the interpreter is shutting down: no new threads
                    log.warning("could not start the relay; the sweeper will send %s", ids)
                    self._pending.clear()
                    return
                self._thread = thread
            self._cond.notify()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every id submitted so far was sent (or its send failed).

        Returns:
            Whether that happened within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._in_flight:
                if self._thread is None:
                    break  # nothing left to send them (a forked child's copy): see `stop`
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return not (self._pending or self._in_flight)

    def stop(self, timeout: float = 10.0) -> None:
        """Send what is pending, then end the thread (a later `submit` starts another)."""
        with self._cond:
            thread = self._thread
            if thread is None or self._pid != os.getpid():
                return
            self._stopping = True
            self._cond.notify_all()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("the relay did not finish sending within %.1f s; the sweeper will", timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._pending and not self._stopping:
                    self._cond.wait_for(lambda: self._pending or self._stopping, self._idle)
                if not self._pending:  # stopping or idle, and everything was sent
                    self._thread = None  # under the lock: a later submit starts another
                    self._cond.notify_all()
                    return
                ids = self._pending[: self._batch]
                del self._pending[: self._batch]
                self._in_flight = len(ids)
            try:
                self._send_many(ids)
            except Exception:  # the outbox rows and the sweeper cover a failed send
                log.warning(
                    "could not send the messages of %d task(s); the sweeper will",
                    len(ids),
                    exc_info=True,
                )
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()


_RELAYS: weakref.WeakSet[Relay] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for relay in list(_RELAYS):
        relay.stop(timeout=5.0)
