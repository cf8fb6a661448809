"""OpenTelemetry tracing (the optional extra: `pip install tasker[otel]`).

`Tracing` is an observer (`tasker.engine.observer`) that makes spans of what the engine
reports, with the tracer provider you configured (OpenTelemetry's global one unless
given):

- `tasker enqueue NAME`: each `enqueue`/`enqueue_many` call (a producer span, a child of
  whatever span is current in the caller);
- `tasker pass NAME`: each engine pass over a task (a consumer span);
- `tasker step NAME.STEP`: each step attempt, a child of its pass, current on the step's
  thread while its handler runs (so the handler's own spans, and the sub-tasks it
  spawns, nest under it).

The trace context current while a task is built (the enqueue span; for a sub-task, the
spawning attempt's span) is stored with the task (`tasker_tasks.trace_context`, W3C
trace context as JSON), and every pass extracts it: the trace of one task goes on from
its enqueue across the queue, waits, retries and sub-tasks, whichever worker runs it.

Turned on by `Tasker(tracing=True)` or `TASKER_TRACING=1`, or by adding a `Tracing()`
yourself. Tracing is process-wide, as OpenTelemetry's context is: once a `Tracing`
exists, every app of the process stores trace contexts. Without it nothing here is
imported and `carrier()` returns None at once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tasker.engine.observer import Observer
from tasker.errors import ConfigurationError

#: Set once a `Tracing` is made: enqueue stores the current trace context from then on.
_enabled = threading.Event()


def carrier() -> str | None:
    """The current trace context as stored with a task (JSON), or None (tracing off)."""
    if not _enabled.is_set():
        return None
    from opentelemetry import propagate

    found: dict[str, str] = {}
    propagate.inject(found)
    return json.dumps(found, separators=(",", ":")) if found else None


class Tracing(Observer):
    """Spans for enqueue calls, engine passes and step attempts (see the module).

    Args:
        tracer_provider: the provider to get the tracer from (default: the global one,
            as set by `opentelemetry.trace.set_tracer_provider`).

    Raises:
        ConfigurationError: OpenTelemetry is not installed (`pip install tasker[otel]`).
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import context, propagate, trace
        except ImportError as exc:
            raise ConfigurationError(
                f"tracing needs OpenTelemetry: pip install 'tasker[otel]' ({exc})"
            ) from exc
        from tasker import __version__

        self._context, self._propagate, self._trace = context, propagate, trace
        self._tracer = trace.get_tracer("tasker", __version__, tracer_provider)
        # task id -> its pass span, the parent of its attempts (on other threads)
        self._passes: dict[int, Any] = {}
        self._local = threading.local()  # this thread's open enqueue and attempt spans
        _enabled.set()

    # -- enqueue -------------------------------------------------------------------

    def before_enqueue(self, names: Sequence[str]) -> None:
        """Start the enqueue span and make it current while the tasks are built."""
        kinds = sorted(set(names))
        span = self._tracer.start_span(
            f"tasker enqueue {', '.join(kinds)}",
            kind=self._trace.SpanKind.PRODUCER,
            attributes={"tasker.task.names": kinds, "tasker.task.count": len(names)},
        )
        token = self._context.attach(self._trace.set_span_in_context(span))
        self._stack("enqueue").append((span, token))

    def after_enqueue(self, task_ids: Sequence[int], error: BaseException | None) -> None:
        """End the enqueue span, with the task ids (or the error)."""
        opened = self._stack("enqueue")
        if not opened:
            return
        span, token = opened.pop()
        span.set_attribute("tasker.task.ids", list(task_ids))
        self._end(span, token, error)

    # -- passes and attempts -------------------------------------------------------

    def on_pass_started(
        self, task_id: int, task: str, due_at: datetime | None, now: datetime, trace: str | None
    ) -> None:
        """Start the pass span under the task's stored trace; current on this thread."""
        parent = self._propagate.extract(json.loads(trace)) if trace else None
        attributes: dict[str, Any] = {"tasker.task.id": task_id, "tasker.task.name": task}
        if due_at is not None:
            attributes["tasker.queue_delay_seconds"] = max(0.0, (now - due_at).total_seconds())
        span = self._tracer.start_span(
            f"tasker pass {task}",
            context=parent,
            kind=self._trace.SpanKind.CONSUMER,
            attributes=attributes,
        )
        token = self._context.attach(self._trace.set_span_in_context(span))
        self._passes[task_id] = span
        self._stack("pass").append((task_id, span, token))

    def on_pass_finished(self, task_id: int, task: str, error: BaseException | None) -> None:
        """End the pass span (the one this thread started for the task)."""
        opened = self._stack("pass")
        if not opened or opened[-1][0] != task_id:
            return
        _, span, token = opened.pop()
        if self._passes.get(task_id) is span:  # not a newer pass's of the same task
            del self._passes[task_id]
        self._end(span, token, error)

    def on_attempt_started(self, task_id: int, task: str, step: str, attempt: int) -> None:
        """Start the attempt span under its pass; current on the step's thread."""
        opened = self._passes.get(task_id)
        parent = self._trace.set_span_in_context(opened) if opened is not None else None
        span = self._tracer.start_span(
            f"tasker step {task}.{step}",
            context=parent,
            attributes={
                "tasker.task.id": task_id,
                "tasker.task.name": task,
                "tasker.step.name": step,
                "tasker.step.attempt": attempt,
            },
        )
        token = self._context.attach(self._trace.set_span_in_context(span))
        self._stack("attempt").append((span, token))

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
        """End the attempt span: an error status for a failed attempt, with its error."""
        opened = self._stack("attempt")
        if not opened:
            return
        span, token = opened.pop()
        if flow is not None:
            span.set_attribute("tasker.step.flow", flow)
        if not ok and flow is None and error is not None:
            span.add_event(
                "exception",
                {
                    "exception.type": str(error.get("error_class", "")),
                    "exception.message": str(error.get("message", "")),
                    "exception.stacktrace": str(error.get("backtrace", "")),
                },
            )
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, error.get("message")))
        self._context.detach(token)
        span.end()

    def on_lease_lost(self, task_id: int) -> None:
        """Mark the pass span: its task's lease was lost."""
        found = self._passes.get(task_id)
        if found is not None:
            found.add_event("tasker.lease_lost")

    # -- helpers -------------------------------------------------------------------

    def _stack(self, kind: str) -> list[Any]:
        stack: list[Any] | None = getattr(self._local, kind, None)
        if stack is None:
            stack = []
            setattr(self._local, kind, stack)
        return stack

    def _end(self, span: Any, token: Any, error: BaseException | None) -> None:
        if error is not None:
            span.record_exception(error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error)))
        self._context.detach(token)
        span.end()
