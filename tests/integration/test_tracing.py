"""OpenTelemetry tracing (`tasker.engine.tracing`) with the SDK's in-memory exporter,
on SQLite and PostgreSQL: one trace from the enqueue call across the queue, retries,
other workers and tasks enqueued by a step."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from integration_support import task_class
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tasker import StepTemplate, Tasker, TaskRequest
from tasker.engine.tracing import Tracing
from tasker.errors import ConfigurationError, RetryableError
from tasker.store import schema as m


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def by_name(found: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [s for s in found if s.name.startswith(prefix)]


def stored_trace(app: Tasker, task_id: int) -> str | None:
    with app.db.read() as conn:
        return conn.execute(
            sa.select(m.tasks.c.trace_context).where(m.tasks.c.task_id == task_id)
        ).scalar()


def test_one_trace_goes_from_the_enqueue_across_passes_retries_and_handler_spans(
    backend: Tasker, clock, spans
) -> None:
    """Given tracing on and a task whose step `charge` fails once and whose step `ship`
    makes a span of its own, when it is enqueued inside a caller's span and run to the end
    (two passes, the second after the backoff), then every span is in the caller's trace:
    the enqueue span under the caller's, each pass under the enqueue span (whose context
    is stored with the task), each attempt under its pass, the failed attempt marked as an
    error with its exception, and the handler's span under its attempt."""
    provider, exporter = spans
    tracer = provider.get_tracer("test")

    def charge(task, sequence, step):
        if step.attempts == 1:
            raise RetryableError("card service busy", retry_after=5)
        return {"charged": True}

    def ship(task, sequence, step):
        with tracer.start_as_current_span("carrier booking"):
            return {"shipped": True}

    backend.register(
        task_class(
            "order",
            [
                StepTemplate(name="charge", handler=charge),
                StepTemplate(name="ship", handler=ship, depends_on=["charge"]),
            ],
        )
    )
    backend.observe(Tracing(provider))
    with tracer.start_as_current_span("http request") as request_span:
        task = backend.enqueue(TaskRequest(name="order"))
    backend.run_until_idle()
    clock.advance(6)
    backend.run_until_idle()
    assert backend.get_task(task.task_id).status == "complete"

    found = exporter.get_finished_spans()
    trace_id = request_span.get_span_context().trace_id
    assert {s.context.trace_id for s in found} == {trace_id}
    (enqueue,) = by_name(found, "tasker enqueue")
    assert enqueue.name == "tasker enqueue order"
    assert enqueue.parent.span_id == request_span.get_span_context().span_id
    assert enqueue.attributes["tasker.task.ids"] == (task.task_id,)
    carrier = json.loads(stored_trace(backend, task.task_id) or "{}")
    assert f"{enqueue.context.span_id:016x}" in carrier["traceparent"]

    passes = by_name(found, "tasker pass order")
    assert len(passes) == 2
    assert {p.parent.span_id for p in passes} == {enqueue.context.span_id}
    attempts = by_name(found, "tasker step order.")
    assert sorted((a.name, a.attributes["tasker.step.attempt"]) for a in attempts) == [
        ("tasker step order.charge", 1),
        ("tasker step order.charge", 2),
        ("tasker step order.ship", 1),
    ]
    pass_ids = {p.context.span_id for p in passes}
    assert {a.parent.span_id for a in attempts} <= pass_ids
    charges = by_name(found, "tasker step order.charge")
    first, second = sorted(charges, key=lambda a: a.attributes["tasker.step.attempt"])
    assert first.parent.span_id != second.parent.span_id  # a retry: the next pass
    assert first.status.status_code is StatusCode.ERROR
    assert [e.attributes["exception.message"] for e in first.events] == ["card service busy"]
    assert second.status.status_code is StatusCode.UNSET
    (booking,) = by_name(found, "carrier booking")
    (ship_attempt,) = by_name(found, "tasker step order.ship")
    assert booking.parent.span_id == ship_attempt.context.span_id


def test_another_worker_continues_the_trace_and_a_task_enqueued_by_a_step_joins_it(
    backend: Tasker, make_app, spans, clean_env
) -> None:
    """Given tracing on in the enqueuing app and in a second app (another worker) on the
    same database, and a step that enqueues a follow-up task, when the second app runs the
    work, then its passes continue the trace the first app's enqueue stored, and the
    follow-up task's enqueue sits under the step's attempt, its own pass in the same
    trace."""
    provider, exporter = spans
    worker = make_app()
    for app in (backend, worker):

        def parent_step(task, sequence, step, app=app):
            return {"child": app.enqueue(TaskRequest(name="child")).task_id}

        app.register(task_class("parent", [StepTemplate(name="spawn", handler=parent_step)]))
        app.register(task_class("child", [StepTemplate(name="work", handler=lambda t, q, s: {})]))
    backend.observe(Tracing(provider))
    worker.observe(Tracing(provider))

    task = backend.enqueue(TaskRequest(name="parent"))
    worker.run_until_idle()
    done = worker.get_task(task.task_id)
    assert done.status == "complete"
    child_id = done.steps["spawn"].results["child"]
    worker.run_until_idle()
    assert worker.get_task(child_id).status == "complete"

    found = exporter.get_finished_spans()
    (enqueue,) = by_name(found, "tasker enqueue parent")
    assert {s.context.trace_id for s in found} == {enqueue.context.trace_id}
    (attempt,) = by_name(found, "tasker step parent.spawn")
    (child_enqueue,) = by_name(found, "tasker enqueue child")
    assert child_enqueue.parent.span_id == attempt.context.span_id
    (child_pass,) = by_name(found, "tasker pass child")
    assert child_pass.parent.span_id == child_enqueue.context.span_id
    assert stored_trace(backend, child_id) is not None


def test_tracing_is_turned_on_by_the_setting_and_a_missing_sdk_is_named(
    backend: Tasker, make_app, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given no tracing, a task stores no trace context; `TASKER_TRACING=1` gives an app
    the tracing observer, a value that is no flag is refused; and `Tracing()` without
    OpenTelemetry installed is refused, naming the extra to install."""
    backend.register(task_class("plain", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    task = backend.enqueue(TaskRequest(name="plain"))
    assert stored_trace(backend, task.task_id) is None
    assert not backend.observers.wants("on_pass_started")
    monkeypatch.setenv("TASKER_TRACING", "1")
    assert make_app().observers.wants("on_pass_started")
    monkeypatch.setenv("TASKER_TRACING", "maybe")
    with pytest.raises(ConfigurationError, match="tracing must be true or false"):
        make_app()
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ConfigurationError, match=r"tasker\[otel\]"):
        Tracing()


def test_sub_tasks_spawned_by_a_step_continue_its_trace(backend: Tasker, spans) -> None:
    """Given tracing on and a step spawning two sub-tasks it waits for, when the family
    runs to the end, then each child's passes are in the parent's trace, under the
    spawning attempt (whose context is stored with each child), and the parent's later
    pass, woken by its children, is in the same trace too."""
    provider, exporter = spans

    def fan_out(task, sequence, step):
        return {"ids": [step.spawn(TaskRequest(name="child", context={"n": i})) for i in (1, 2)]}

    backend.register(task_class("child", [StepTemplate(name="work", handler=lambda t, q, s: {})]))
    backend.register(task_class("family", [StepTemplate(name="fan_out", handler=fan_out)]))
    backend.observe(Tracing(provider))
    task = backend.enqueue(TaskRequest(name="family"))
    for _ in range(5):
        backend.run_until_idle()
        if backend.get_task(task.task_id).status == "complete":
            break
    view = backend.get_task(task.task_id)
    assert view.status == "complete" and len(view.children) == 2

    found = exporter.get_finished_spans()
    (enqueue,) = by_name(found, "tasker enqueue family")
    assert {s.context.trace_id for s in found} == {enqueue.context.trace_id}
    spawning = by_name(found, "tasker step family.fan_out")
    child_passes = by_name(found, "tasker pass child")
    assert len(child_passes) == 2
    assert {p.parent.span_id for p in child_passes} <= {a.context.span_id for a in spawning}
    assert len(by_name(found, "tasker pass family")) >= 2  # woken by its children
    for child_id in view.children:
        assert stored_trace(backend, child_id) is not None


def test_a_pass_that_loses_its_lease_says_so_on_its_span(backend: Tasker, clock, spans) -> None:
    """Given tracing on and a step during which another worker takes the task's lease,
    when the step returns, then the pass span ends with a `tasker.lease_lost` event and
    the attempt span under it still ends."""
    provider, exporter = spans

    def slow(task, sequence, step):
        clock.advance(backend.settings.lease_seconds + 1)
        now = backend.now()
        backend.store.claim(task.task_id, "thief", now, now.replace(year=now.year + 1))
        return {}

    backend.register(task_class("stolen", [StepTemplate(name="s", handler=slow)]))
    backend.observe(Tracing(provider))
    backend.enqueue(TaskRequest(name="stolen"))
    backend.run_until_idle()

    found = exporter.get_finished_spans()
    (pass_span,) = by_name(found, "tasker pass stolen")
    assert [e.name for e in pass_span.events] == ["tasker.lease_lost"]
    (attempt,) = by_name(found, "tasker step stolen.s")
    assert attempt.parent.span_id == pass_span.context.span_id
