"""The workers' Prometheus metrics: an observer, and what `tasker worker --metrics-port` serves.

The database-backed series of `/metrics` (`tasker.web.ops`) say what is stored; these
say what the workers did: attempts, failures and their durations, how long tasks waited
in the queue, the sweeper's re-sends, lost leases and limit waits. They are counted by
`PrometheusObserver`, one of the app's observers (`Tasker.observe`).

With `tasker worker --processes N` every worker process counts into the files of
prometheus_client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`: a fresh folder the
supervisor makes and removes, unless the variable is set already) and the supervisor
serves their sum on the metrics port. One process (`--processes 1`) serves its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client import multiprocess as mp

from tasker.app import Tasker
from tasker.engine.observer import Observer
from tasker.errors import ConfigurationError

#: Seconds: from milliseconds (a no-op step, a prompt claim) to an hour (a long backlog).
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

#: Every series the workers serve: name -> (kind, labels, help). The README lists them.
SERIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "tasker_attempts_total": (
        "counter",
        ("task", "step"),
        "Step attempts that ended, by task and step name.",
    ),
    "tasker_attempt_failures_total": (
        "counter",
        ("task", "step"),
        "Step attempts that failed (raised), by task and step name.",
    ),
    "tasker_attempt_duration_seconds": (
        "histogram",
        ("task", "step"),
        "How long step attempts ran, by task and step name.",
    ),
    "tasker_queue_delay_seconds": (
        "histogram",
        ("task",),
        "From when a task was due to when a worker claimed it, by task name.",
    ),
    "tasker_passes_total": ("counter", ("task",), "Engine passes (claims of a task)."),
    "tasker_lease_losses_total": (
        "counter",
        (),
        "Passes that lost their task's lease (taken over, or expired).",
    ),
    "tasker_sweeper_resent_total": (
        "counter",
        (),
        "Task messages the sweeper sent again (lost, due or abandoned tasks).",
    ),
    "tasker_messages_sent_total": ("counter", (), "Task messages sent to the broker."),
    "tasker_limit_waits_total": (
        "counter",
        ("task", "step", "system"),
        "Times a step waited for room under its dependent system's limit.",
    ),
}


def _prefix(name: str) -> str:
    """The name prometheus_client takes: a counter's without its `_total`."""
    return name.removesuffix("_total") if SERIES[name][0] == "counter" else name


class PrometheusObserver(Observer):
    """Counts what the engine reports into Prometheus series (see `SERIES`).

    Args:
        registry: where to register the series; None registers them nowhere (in
            multiprocess mode, where the files are what is read).
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        def counter(name: str) -> Counter:
            _, labels, doc = SERIES[name]
            return Counter(_prefix(name), doc, labels, registry=registry)

        def histogram(name: str) -> Histogram:
            _, labels, doc = SERIES[name]
            return Histogram(name, doc, labels, registry=registry, buckets=BUCKETS)

        self.attempts = counter("tasker_attempts_total")
        self.failures = counter("tasker_attempt_failures_total")
        self.durations = histogram("tasker_attempt_duration_seconds")
        self.queue_delay = histogram("tasker_queue_delay_seconds")
        self.passes = counter("tasker_passes_total")
        self.lease_losses = counter("tasker_lease_losses_total")
        self.resent = counter("tasker_sweeper_resent_total")
        self.messages = counter("tasker_messages_sent_total")
        self.limit_waits = counter("tasker_limit_waits_total")

    def on_pass_started(
        self, task_id: int, task: str, due_at: datetime | None, now: datetime, trace: str | None
    ) -> None:
        """Count the pass; observe how long the task waited for it."""
        self.passes.labels(task).inc()
        if due_at is not None:
            self.queue_delay.labels(task).observe(max(0.0, (now - due_at).total_seconds()))

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
        """Count the attempt (and the failure); observe its duration."""
        self.attempts.labels(task, step).inc()
        if not ok and flow is None:
            self.failures.labels(task, step).inc()
        self.durations.labels(task, step).observe(seconds)

    def on_lease_lost(self, task_id: int) -> None:
        """Count the lost lease."""
        self.lease_losses.inc()

    def on_sweeper_resend(self, sent: int, still_queued: int) -> None:
        """Count the re-sent messages."""
        if sent:
            self.resent.inc(sent)

    def on_messages_sent(self, count: int) -> None:
        """Count the messages."""
        self.messages.inc(count)

    def on_limit_wait(self, task: str, step: str, system: str) -> None:
        """Count the wait."""
        self.limit_waits.labels(task, step, system).inc()


@dataclass
class MetricsServer:
    """A metrics endpoint being served (`serve`); `close()` stops it."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        """The port it listens on (the one asked for, or the one the OS chose for 0)."""
        return int(self.server.server_port)

    def close(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()


def serve(port: int, host: str, registry: CollectorRegistry) -> MetricsServer:
    """Serve `registry` in Prometheus text format on `host:port` (any path), on a thread.

    Raises:
        ConfigurationError: the port cannot be bound (in use, or not allowed).
    """
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
    return MetricsServer(server, thread)


def serve_own(app: Tasker, port: int, host: str) -> MetricsServer:
    """One worker process: count `app`'s events into a registry of its own and serve it.

    Raises:
        ConfigurationError: the port cannot be bound.
    """
    registry = CollectorRegistry()
    observer = app.observe(PrometheusObserver(registry))
    try:
        return serve(port, host, registry)
    except ConfigurationError:
        app.observers.remove(observer)
        raise


@contextlib.contextmanager
def multiprocess_folder() -> Iterator[str]:
    """The folder of multiprocess mode: `PROMETHEUS_MULTIPROC_DIR`, else a fresh one.

    A folder made here is removed on exit; one the user named is left as it is (clear it
    between runs, as prometheus_client says, or the counts go on from the last run).

    Raises:
        ConfigurationError: `PROMETHEUS_MULTIPROC_DIR` names no folder.
    """
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        if not os.path.isdir(given):
            raise ConfigurationError(f"PROMETHEUS_MULTIPROC_DIR={given!r} is not a folder")
        yield given
        return
    folder = tempfile.mkdtemp(prefix="tasker-metrics-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def serve_multiprocess(folder: str, port: int, host: str) -> MetricsServer:
    """The supervisor: serve the sum of what every worker process counted in `folder`."""
    registry = CollectorRegistry()
    mp.MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
    return serve(port, host, registry)


def process_died(folder: str, pid: int) -> None:
    """Tell multiprocess mode that a worker process is gone (its counts stay summed)."""
    mp.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]
