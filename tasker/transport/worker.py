"""`tasker worker`: run an app's Dramatiq worker and sweeper until told to stop.

One process runs `threads` engine passes at once. With `processes > 1` a small
supervisor starts that many worker processes (fresh interpreters, so no state
crosses a fork), forwards SIGTERM/SIGINT to them and restarts any that die.
"""

from __future__ import annotations

import importlib
import logging
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

from sqlalchemy.exc import OperationalError

from tasker.app import Tasker
from tasker.errors import ConfigurationError

log = logging.getLogger("tasker.worker")


def load_app(ref: str) -> Tasker:
    """Import `MODULE[:ATTR]` and return its `Tasker` (attribute `app` by default).

    The attribute may also be a zero-argument function returning the app.

    Raises:
        ConfigurationError: the module or attribute is missing or not a Tasker.
    """
    module_name, _, attr = ref.partition(":")
    attr = attr or "app"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        found = getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r}") from None
    if callable(found) and not isinstance(found, Tasker):
        found = found()
    if not isinstance(found, Tasker):
        raise ConfigurationError(f"{ref} is a {type(found).__name__}, not a tasker.Tasker")
    return found


def run_one(ref: str, threads: int, stop: threading.Event | None = None) -> None:
    """Run one worker process until SIGTERM/SIGINT (or `stop`), then shut down gracefully.

    Graceful: running passes start no new steps, finish what is in flight within
    the stop timeout, and hand their tasks back (released lease, due now).
    """
    app = load_app(ref)
    stop = stop or threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: shutting down gracefully", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    _migrate_when_reachable(app, stop)
    if stop.is_set():
        app.close()
        return
    app.start(threads=threads)
    log.info("worker %s: %d thread(s) on %s", app.owner(), threads, app.settings.queue_name)
    try:
        stop.wait()
    finally:
        app.close()


def _migrate_when_reachable(app: Tasker, stop: threading.Event) -> None:
    """Migrate, waiting (with backoff) for a database that is not up yet."""
    delay = 0.5
    while not stop.is_set():
        try:
            app.migrate()
            return
        except OperationalError as exc:
            log.warning("database not reachable (%s); retrying in %.1f s", exc.orig, delay)
            stop.wait(delay)
            delay = min(delay * 2, 10.0)


def supervise(ref: str, processes: int, threads: int) -> int:
    """Run `processes` worker processes, restarting any that die, until SIGTERM/SIGINT."""
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    cmd = [
        sys.executable,
        "-m",
        "tasker",
        "worker",
        ref,
        "--processes",
        "1",
        "--threads",
        str(threads),
    ]
    children = [subprocess.Popen(cmd) for _ in range(processes)]
    while not stopping.wait(0.5):
        for i, child in enumerate(children):
            if child.poll() is not None:
                log.warning(
                    "worker process %d exited with %s; restarting it", child.pid, child.returncode
                )
                time.sleep(0.5)
                children[i] = subprocess.Popen(cmd)
    for child in children:
        child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0
