"""Reused threads for running steps.

Starting a thread per step attempt costs more than a no-op step. A fixed-size pool
would not do either: an attempt that overruns its time limit keeps its thread
(Python cannot kill one), so a fixed pool could run dry and steps would queue
behind it. This pool never queues: it hands the work to an idle thread or starts
a new one, and a thread that stays idle for `idle_seconds` ends.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

_Job = tuple[Callable[..., Any], tuple[Any, ...]]


class ElasticThreads:
    """Runs each submitted call at once on an idle thread or on a new one."""

    def __init__(self, name: str, idle_seconds: float = 30.0) -> None:
        self._name = name
        self._idle_seconds = idle_seconds
        self._idle: list[queue.SimpleQueue[_Job]] = []  # the inboxes of idle threads
        self._lock = threading.Lock()
        self._started = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call `fn(*args)` on a thread of the pool; exceptions are the caller's to catch."""
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
            if inbox is None:
                self._started += 1
                number = self._started
        if inbox is not None:
            inbox.put((fn, args))
            return
        inbox = queue.SimpleQueue()
        inbox.put((fn, args))
        threading.Thread(
            target=self._serve, args=(inbox,), name=f"{self._name}-{number}", daemon=True
        ).start()

    def _serve(self, inbox: queue.SimpleQueue[_Job]) -> None:
        job = inbox.get()
        while True:
            fn, args = job
            fn(*args)
            del fn, args, job  # do not keep the last call's objects alive while idle
            with self._lock:
                self._idle.append(inbox)
            try:
                job = inbox.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:
                        self._idle.remove(inbox)
                        return
                job = inbox.get()  # taken off the idle list just now: its call is coming
