"""`Tasker.wait`: blocking until a task has stopped running, cheaply.

A waiter reads the task's status by primary key. On SQLite it reads again after 5 ms,
then backs off to one read every 100 ms. On PostgreSQL a trigger (see
`tasker.store.triggers`) sends `NOTIFY tasker_task_done` with the task id whenever a
task stops running; one listener thread per app holds one connection that LISTENs,
and wakes the callers waiting for that id, who then read the status once. A caller
also reads it every second whatever it hears, so a lost connection only slows it down.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import sqlalchemy as sa

from tasker.core.states import TASK_FINAL, TASK_HALTED, Status
from tasker.errors import TaskNotFoundError
from tasker.store import schema as m
from tasker.store.db import Database
from tasker.store.triggers import DONE_CHANNEL

log = logging.getLogger("tasker.wait")

#: The statuses `wait` returns on: the task finished, or it needs a person.
STOPPED = frozenset({*TASK_FINAL, *TASK_HALTED})

_FIRST_POLL, _MAX_POLL = 0.005, 0.1
_SAFETY_POLL = 1.0  # PostgreSQL: read at least this often, notification or not
T = m.tasks


def _status(db: Database, task_id: int) -> str:
    with db.read() as conn:
        status = conn.execute(sa.select(T.c.status).where(T.c.task_id == task_id)).scalar()
    if status is None:
        raise TaskNotFoundError(f"no task has id {task_id}")
    return str(status)


class _Listener:
    """One LISTEN connection shared by an app's waiting callers (PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._waiting: dict[int, list[threading.Event]] = {}
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, task_id: int) -> threading.Event:
        """An event set when the task is announced (or the connection was lost)."""
        event = threading.Event()
        with self._lock:
            self._waiting.setdefault(task_id, []).append(event)
            if self._thread is None or not self._thread.is_alive():
                self._ready.clear()
                self._thread = threading.Thread(
                    target=self._run, name="tasker-wait-listener", daemon=True
                )
                self._thread.start()
        # A status read after LISTEN took effect cannot miss the notification after it.
        self._ready.wait(_SAFETY_POLL)
        return event

    def unsubscribe(self, task_id: int, event: threading.Event) -> None:
        """Forget a caller's event."""
        with self._lock:
            events = self._waiting.get(task_id, [])
            if event in events:
                events.remove(event)
            if not events:
                self._waiting.pop(task_id, None)

    def _wake(self, task_ids: list[int] | None) -> None:
        with self._lock:
            ids = list(self._waiting) if task_ids is None else task_ids
            for task_id in ids:
                for event in self._waiting.get(task_id, ()):
                    event.set()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                if self._listen():
                    return
            except Exception:
                log.warning("the wait listener lost its connection; reconnecting", exc_info=True)
                self._ready.clear()
                self._wake(None)  # notifications may have been missed: everyone reads again
                self._closed.wait(_SAFETY_POLL)

    def _listen(self) -> bool:
        """Listen until nobody waits (then True: the thread ends) or the app closes."""
        raw = self._db.engine.raw_connection()
        driver: Any = raw.driver_connection
        raw.detach()  # a LISTEN connection never goes back to the pool
        try:
            driver.autocommit = True
            driver.execute(f"LISTEN {DONE_CHANNEL}")
            self._ready.set()
            self._wake(None)  # a caller that subscribed during a reconnect reads again
            while not self._closed.is_set():
                with self._lock:
                    if not self._waiting:  # nobody waits: close the connection, end
                        self._ready.clear()
                        self._thread = None
                        return True
                for note in driver.notifies(timeout=0.5):
                    if note.payload.isdigit():
                        self._wake([int(note.payload)])
            return True
        finally:
            raw.close()

    def close(self) -> None:
        """Stop the listener thread and close its connection."""
        self._closed.set()
        thread = self._thread
        if thread is not None:
            thread.join(2.0)


class Waiter:
    """Waits for tasks of one database to stop running."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._listener = _Listener(db) if db.is_postgres else None

    def wait(self, task_id: int, timeout: float | None) -> str:
        """Block until the task's status is one of `STOPPED`; return that status.

        Raises:
            TaskNotFoundError: no task has that id.
            TimeoutError: `timeout` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        listener = self._listener
        event = listener.subscribe(task_id) if listener is not None else None
        delay = _FIRST_POLL
        try:
            while True:
                status = _status(self._db, task_id)
                if Status(status) in STOPPED:
                    return status
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"task {task_id} is still {status} after {timeout} s")
                if event is not None:
                    event.wait(_SAFETY_POLL if left is None else min(left, _SAFETY_POLL))
                    event.clear()
                else:
                    time.sleep(delay if left is None else min(delay, left))
                    delay = min(delay * 2, _MAX_POLL)
        finally:
            if listener is not None and event is not None:
                listener.unsubscribe(task_id, event)

    def close(self) -> None:
        """Stop listening (PostgreSQL)."""
        if self._listener is not None:
            self._listener.close()
