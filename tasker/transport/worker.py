"""`tasker worker`: run an app's Dramatiq worker and sweeper until told to stop.

One process runs `threads` engine passes at once. With `processes > 1` a small
supervisor starts that many worker processes (fresh interpreters, so no state
crosses a fork) and restarts any that die: at once if it had run for a while,
else after a delay that doubles with each quick crash (0.5 s up to 30 s), so a
worker that cannot start (a bad import, a missing setting) is retried calmly.
SIGTERM/SIGINT stop it gracefully: every child is told at once, each lets its
running attempts finish for up to the graceful timeout (by default the longest
step timeout of the app's handlers), and the supervisor SIGKILLs whatever still
runs `KILL_MARGIN_SECONDS` after that, all children together.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import FrameType
from typing import Any

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


#: Seconds the supervisor waits, beyond the graceful timeout, before SIGKILLing a child.
KILL_MARGIN_SECONDS = 10.0
#: A child that ran at least this long before dying is restarted at once.
STABLE_SECONDS = 30.0
#: The first and the longest delay before restarting a child that keeps dying quickly.
RESTART_DELAY_FIRST, RESTART_DELAY_MAX = 0.5, 30.0


def longest_step_timeout(app: Tasker) -> float:
    """The longest time limit of any step of any registered handler.

    The default graceful timeout: a stop that waits that long lets every running
    attempt finish.
    """
    limits = [
        t.timeout if t.timeout is not None else app.settings.step_timeout
        for reg in app.factory.registered()
        for t in reg.steps.values()
    ]
    return max(limits, default=app.settings.step_timeout)


def restart_delay(quick_crashes: int) -> float:
    """Seconds before restarting a child that died after `quick_crashes` quick deaths.

    0 quick crashes (it had run for `STABLE_SECONDS`): at once; then 0.5 s, doubling
    with each quick crash in a row, up to `RESTART_DELAY_MAX`.
    """
    if quick_crashes <= 0:
        return 0.0
    return min(RESTART_DELAY_FIRST * 2.0 ** (quick_crashes - 1), RESTART_DELAY_MAX)


@dataclass(frozen=True)
class Metrics:
    """Where a worker serves its Prometheus metrics (`tasker worker --metrics-port`).

    Attributes:
        port: the TCP port (0: one the OS chooses, logged).
        host: the address to bind.
        multiprocess: a supervised child: count into `PROMETHEUS_MULTIPROC_DIR`, serve
            nothing (the supervisor serves the sum).
    """

    port: int
    host: str = "127.0.0.1"
    multiprocess: bool = False


def run_one(
    ref: str,
    threads: int,
    stop: threading.Event | None = None,
    graceful_timeout: float | None = None,
    metrics: Metrics | None = None,
) -> None:
    """Run one worker process until SIGTERM/SIGINT (or `stop`), then shut down gracefully.

    Graceful: running passes start no new steps, let the attempts in flight finish for
    up to `graceful_timeout` seconds (default: the app's longest step timeout), and
    hand their tasks back (released lease, due now). An attempt still running then is
    abandoned; its lease expires and it counts as a failed attempt ("worker lost").

    Raises:
        ConfigurationError: the app cannot be loaded; the metrics port cannot be bound.
    """
    app = load_app(ref)
    try:
        served = _count_metrics(app, metrics)
    except BaseException:
        app.close()
        raise
    grace = longest_step_timeout(app) if graceful_timeout is None else graceful_timeout
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
        if served is not None:
            served.close()
        return
    # What is alive now (the app, its handlers, the libraries) lives as long as the
    # process: moved out of the collector's generations, a full collection no longer
    # walks it, so its pauses (15-25 ms with the libraries loaded) stop landing on steps.
    gc.collect()
    gc.freeze()
    app.start(threads=threads)
    log.info(
        "worker %s: %d thread(s) on %s; a graceful stop waits up to %g s",
        app.owner(),
        threads,
        app.settings.queue_name,
        grace,
    )
    try:
        stop.wait()
    finally:
        app.stop(timeout=grace)
        app.close()
        if served is not None:
            served.close()


def _count_metrics(app: Tasker, metrics: Metrics | None) -> Any:
    """Add the Prometheus observer to `app` as `metrics` says; the server it started."""
    if metrics is None:
        return None
    from tasker.web import worker_metrics  # prometheus_client, only for --metrics-port

    if metrics.multiprocess:
        app.observe(worker_metrics.PrometheusObserver(None))
        return None
    served = worker_metrics.serve_own(app, metrics.port, metrics.host)
    log.info("metrics on http://%s:%d/metrics", metrics.host, served.port)
    return served


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


class _Child:
    """One supervised worker process slot: its process and its recent crashes."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.cmd = cmd
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.quick_crashes = 0
        self.restart_at = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, env=self.env)
        self.started = time.monotonic()

    def check(self, now: float, died: Callable[[int], None] | None = None) -> None:
        """Notice a death (and schedule the restart), or restart when it is time."""
        if self.proc is not None and self.proc.poll() is not None:
            if died is not None:
                died(self.proc.pid)
            lived = now - self.started
            self.quick_crashes = 0 if lived >= STABLE_SECONDS else self.quick_crashes + 1
            delay = restart_delay(self.quick_crashes)
            log.warning(
                "worker process %d exited with %s after %.1f s; restarting it in %.1f s",
                self.proc.pid,
                self.proc.returncode,
                lived,
                delay,
            )
            self.proc, self.restart_at = None, now + delay
        if self.proc is None and now >= self.restart_at:
            self.start()


def supervise(
    ref: str,
    processes: int,
    threads: int,
    graceful_timeout: float | None = None,
    metrics: Metrics | None = None,
) -> int:
    """Run `processes` worker processes, restarting any that die, until SIGTERM/SIGINT.

    Args:
        ref: the app, `MODULE[:ATTR]`.
        processes: how many worker processes.
        threads: engine passes per process.
        graceful_timeout: how long a stop lets running attempts finish; default: the
            app's longest step timeout (the supervisor loads the app to read it).
        metrics: serve the sum of every child's Prometheus metrics there (the children
            count in prometheus_client's multiprocess mode, `tasker.web.worker_metrics`).

    Returns:
        0, once every child has stopped.

    Raises:
        ConfigurationError: no `graceful_timeout` and the app cannot be loaded; the
            metrics port cannot be bound.
    """
    if metrics is None:
        return _supervise(ref, processes, threads, graceful_timeout, None)
    from tasker.web import worker_metrics  # prometheus_client, only for --metrics-port

    with worker_metrics.multiprocess_folder() as folder:
        served = worker_metrics.serve_multiprocess(folder, metrics.port, metrics.host)
        log.info("metrics of %d worker process(es) on http://%s:%d/metrics (counted in %s)",
                 processes, metrics.host, served.port, folder)  # fmt: skip
        try:
            return _supervise(ref, processes, threads, graceful_timeout, folder)
        finally:
            served.close()


def _supervise(
    ref: str,
    processes: int,
    threads: int,
    graceful_timeout: float | None,
    metrics_folder: str | None,
) -> int:
    """`supervise`; with `metrics_folder`, the children count their metrics there."""
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if graceful_timeout is None:
        app = load_app(ref)
        graceful_timeout = longest_step_timeout(app)
        app.close()
    verbose = ["-v"] if logging.getLogger().getEffectiveLevel() <= logging.INFO else []
    cmd = [
        sys.executable,
        "-m",
        "tasker",
        *verbose,  # the children log as the supervisor does
        "worker",
        ref,
        "--processes",
        "1",
        "--threads",
        str(threads),
        "--graceful-timeout",
        str(graceful_timeout),
    ]
    env, died = None, None
    if metrics_folder is not None:
        from tasker.web.worker_metrics import process_died

        cmd.append("--metrics-multiprocess")
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_folder}
        died = partial(process_died, metrics_folder)
    children = [_Child(cmd, env) for _ in range(processes)]
    for child in children:
        child.start()
    while not stopping.wait(0.2):
        now = time.monotonic()
        for child in children:
            child.check(now, died)
    stop_all([c.proc for c in children if c.proc is not None], graceful_timeout)
    return 0


def stop_all(procs: list[subprocess.Popen[bytes]], graceful_timeout: float) -> None:
    """SIGTERM every process at once, wait for all of them together, SIGKILL the rest.

    The deadline is one for all: `graceful_timeout + KILL_MARGIN_SECONDS` from now.
    """
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + graceful_timeout + KILL_MARGIN_SECONDS
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    late = [p for p in procs if p.poll() is None]
    if late:
        log.warning(
            "killing %d worker process(es) still running %g s after the stop: %s",
            len(late),
            graceful_timeout + KILL_MARGIN_SECONDS,
            ", ".join(str(p.pid) for p in late),
        )
        for proc in late:
            proc.kill()
        for proc in late:
            proc.wait()
