"""The engine end to end, on SQLite and on PostgreSQL (nearly every test runs on both).

Each test reads Given / When / Then: the set-up, the action, and what must hold.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from integration_support import (
    EventLog,
    assert_utc,
    check_history,
    messages_sent,
    settle,
    task_class,
)

from tasker import StepHandler, StepTemplate, Tasker, TaskRequest, errors
from tasker.core.states import Status
from tasker.engine import gathering
from tasker.store import lease as leases
from tasker.store import schema as m
from tasker.store.audit import StepChange

# -- running DAGs ----------------------------------------------------------------------


def test_fan_out_fan_in_runs_every_step_only_after_all_its_parents(backend, clock):
    """Given a DAG fanning out from a root and joining in multi-parent steps,
    when it runs, then each step starts only after every parent finished, and all complete."""
    log = EventLog()
    deps = {
        "root": [],
        "a": ["root"],
        "b": ["root"],
        "c": ["root"],
        "ab": ["a", "b"],
        "abc": ["ab", "c"],
        "side": ["root"],
        "tail": ["abc", "side", "root"],
    }
    templates = [
        StepTemplate(name=n, handler=log.recorder(), depends_on=d) for n, d in deps.items()
    ]
    backend.register(task_class("fan", templates))
    task = backend.enqueue(TaskRequest(name="fan"))
    backend.run_until_idle()

    done = backend.get_task(task.task_id)
    assert done.status == "complete"
    assert sorted(log.of("start")) == sorted(deps)
    log.assert_dependency_order(deps)
    assert {n: s.depends_on for n, s in done.steps.items()} == {
        n: tuple(sorted(d)) for n, d in deps.items()
    }
    check_history(backend, task.task_id)


def test_two_ready_siblings_run_at_the_same_time(backend):
    """Given two siblings that each wait for the other at a barrier,
    when the task runs, then both pass the barrier: they ran concurrently."""
    barrier = threading.Barrier(2, timeout=10)

    def meet(task, sequence, step):
        return {"arrival": barrier.wait()}

    backend.register(
        task_class(
            "siblings",
            [
                StepTemplate(name="root", handler=lambda t, q, s: {}),
                StepTemplate(name="left", handler=meet, depends_on=["root"], retry_limit=1),
                StepTemplate(name="right", handler=meet, depends_on=["root"], retry_limit=1),
                StepTemplate(name="join", handler=lambda t, q, s: {}, depends_on=["left", "right"]),
            ],
        )
    )
    task = backend.enqueue(TaskRequest(name="siblings"))
    backend.run_until_idle()

    done = backend.get_task(task.task_id)
    assert done.status == "complete", {n: s.error for n, s in done.steps.items()}
    arrivals = {done.steps["left"].results["arrival"], done.steps["right"].results["arrival"]}
    assert arrivals == {0, 1}


def _completed_in(app: Tasker, task_id: int) -> dict[str, int]:
    """The transaction number of the write that completed each step, by step name."""
    names = {v.workflow_step_id: n for n, v in app.get_task(task_id).steps.items()}
    t = m.step_transitions
    with app.db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.workflow_step_id, t.c.tx_seq).where(
                t.c.task_id == task_id, t.c.to_status == "complete"
            )
        ).all()
    return {names[step_id]: tx for step_id, tx in rows}


def _middle_of(name: str, slow: float) -> type:
    """A diamond whose step `c` takes `slow` seconds and the others return at once."""

    def nap(task, sequence, step):  # type: ignore[no-untyped-def]
        time.sleep(slow)
        return {}

    return task_class(
        name,
        [
            StepTemplate(name="a", handler=lambda t, q, s: {}),
            StepTemplate(name="b", handler=lambda t, q, s: {}, depends_on=["a"]),
            StepTemplate(name="c", handler=nap, depends_on=["a"]),
            StepTemplate(name="d", handler=lambda t, q, s: {}, depends_on=["b", "c"]),
        ],
    )


def test_siblings_started_together_have_their_outcomes_recorded_by_one_write(backend, monkeypatch):
    """Given a diamond whose step c returns 0.3 s after its sibling b, and a sibling wait
    longer than that, when the task runs, then b's and c's outcomes land in one write
    (one transaction number): b's outcome waited for its sibling, saving a write."""
    monkeypatch.setattr(gathering, "SIBLING_WAIT", 5.0)
    backend.register(_middle_of("together", 0.3))
    task = backend.enqueue(TaskRequest(name="together"))
    backend.run_until_idle()

    assert backend.get_task(task.task_id).status == "complete"
    tx = _completed_in(backend, task.task_id)
    assert tx["b"] == tx["c"]
    assert len(set(tx.values())) == 3  # a; b and c; d


def test_an_outcome_waits_for_its_siblings_only_for_the_sibling_wait(backend, monkeypatch):
    """Given a diamond whose step c takes 0.5 s and a sibling wait of 0.05 s,
    when the task runs, then b's outcome is recorded on its own, before c's:
    a sibling that runs on does not hold back what ended."""
    monkeypatch.setattr(gathering, "SIBLING_WAIT", 0.05)
    backend.register(_middle_of("apart", 0.5))
    task = backend.enqueue(TaskRequest(name="apart"))
    backend.run_until_idle()

    assert backend.get_task(task.task_id).status == "complete"
    tx = _completed_in(backend, task.task_id)
    assert tx["a"] < tx["b"] < tx["c"] < tx["d"]


def test_max_concurrent_steps_1_runs_siblings_one_after_the_other(make_app):
    """Given max_concurrent_steps=1 and two siblings meeting at a barrier,
    when the task runs, then they never overlap: the barrier times out, and that is
    recorded as each step's error (not a crash), after which the app still works."""
    app = make_app(max_concurrent_steps=1)
    barrier = threading.Barrier(2, timeout=1)
    lock = threading.Lock()
    active, overlap = [0], [0]

    def meet(task, sequence, step):
        with lock:
            active[0] += 1
            overlap[0] = max(overlap[0], active[0])
        try:
            barrier.wait()
        finally:
            with lock:
                active[0] -= 1
        return {}

    app.register(
        task_class(
            "serial",
            [
                StepTemplate(name="left", handler=meet, retry_limit=1),
                StepTemplate(name="right", handler=meet, retry_limit=1),
            ],
        )
    )
    app.register(task_class("after", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    task = app.enqueue(TaskRequest(name="serial"))
    app.run_until_idle()

    done = app.get_task(task.task_id)
    assert overlap[0] == 1
    assert done.status == "error"
    for name in ("left", "right"):
        assert done.steps[name].status == "error"
        assert done.steps[name].error["error_class"] == "threading.BrokenBarrierError"
        assert done.steps[name].attempts == 1
    check_history(app, task.task_id)
    other = app.enqueue(TaskRequest(name="after"))
    app.run_until_idle()
    assert app.get_task(other.task_id).status == "complete"


def test_the_concurrency_bound_holds_for_many_ready_siblings(make_app, release):
    """Given max_concurrent_steps=2 and six ready siblings,
    when the task runs, then never more than two run at once, and all complete."""
    app = make_app(max_concurrent_steps=2)
    lock = threading.Lock()
    active, peak = [0], [0]

    def work(task, sequence, step):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        release.wait(0.02)
        with lock:
            active[0] -= 1
        return {}

    app.register(
        task_class("bounded", [StepTemplate(name=f"s{i}", handler=work) for i in range(6)])
    )
    task = app.enqueue(TaskRequest(name="bounded"))
    app.run_until_idle()
    assert app.get_task(task.task_id).status == "complete"
    assert 1 <= peak[0] <= 2


class Panic(BaseException):
    """Not an Exception: what a native panic looks like to Python."""


def _raises(task, sequence, step):
    raise ValueError("bad input")


def _panics(task, sequence, step):
    raise Panic("native code panicked")


def _assigns_a_list(task, sequence, step):
    step.results = [1, 2]


BAD_HANDLERS = {
    # step name: (handler, error_class suffix, message fragment)
    "raises": (_raises, "builtins.ValueError", "bad input"),
    "panics": (_panics, "Panic", "native code panicked"),
    "list": (lambda t, q, s: [1, 2], "InvalidResultError", "returned a list"),
    "int": (lambda t, q, s: 42, "InvalidResultError", "returned a int"),
    "str": (lambda t, q, s: "done", "InvalidResultError", "returned a str"),
    "set": (lambda t, q, s: {1, 2}, "InvalidResultError", "returned a set"),
    "assigned_list": (_assigns_a_list, "InvalidResultError", "returned a list"),
    "nested_set": (lambda t, q, s: {"s": {1}}, "InvalidResultError", "$.s is a set"),
    "nan": (lambda t, q, s: {"x": math.nan}, "InvalidResultError", "$.x is nan"),
    "inf": (lambda t, q, s: {"x": [math.inf]}, "InvalidResultError", "$.x[0] is inf"),
    "int_key": (lambda t, q, s: {1: "a"}, "InvalidResultError", "keys must be strings"),
    "object": (lambda t, q, s: {"o": object()}, "InvalidResultError", "not JSON-serialisable"),
}


def test_every_kind_of_bad_handler_gives_a_recorded_step_error_and_the_worker_goes_on(backend):
    """Given steps that raise, panic, return a non-dict or return what JSON cannot hold,
    when the task runs, then each step is in error with a clear message, class and
    backtrace, the good step completes, and the app goes on to run another task."""
    templates = [
        StepTemplate(name=name, handler=fn, retry_limit=1)
        for name, (fn, _, _) in BAD_HANDLERS.items()
    ]
    templates.append(StepTemplate(name="good", handler=lambda t, q, s: {"ok": True}))
    backend.register(task_class("bad_handlers", templates))
    backend.register(task_class("next", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    task = backend.enqueue(TaskRequest(name="bad_handlers"))
    backend.run_until_idle()

    done = backend.get_task(task.task_id)
    for name, (_, error_class, fragment) in BAD_HANDLERS.items():
        step = done.steps[name]
        assert step.status == "error", name
        assert step.results is None, name
        assert step.error["error_class"].endswith(error_class), (name, step.error)
        assert fragment in step.error["message"], (name, step.error)
        assert step.error["backtrace"], name
    assert done.steps["raises"].error["backtrace"].rstrip().endswith("ValueError: bad input")
    assert done.steps["good"].status == "complete"
    assert done.status == "error"
    check_history(backend, task.task_id)

    other = backend.enqueue(TaskRequest(name="next"))
    backend.run_until_idle()
    assert backend.get_task(other.task_id).status == "complete"


def test_a_handler_hanging_past_its_timeout_is_a_recorded_error_and_other_tasks_go_on(
    backend, clock, release
):
    """Given a step with timeout=0.5 whose first attempt hangs,
    when the task runs, then the attempt is recorded as timed out while its thread still
    hangs; the step is not started again while that thread lives, even once its retry is
    due; other tasks run meanwhile; and once the thread ends, the retry runs and the late
    result of the abandoned attempt is dropped."""
    calls = []

    def hang_once(task, sequence, step):
        calls.append(step.attempts)
        if step.attempts == 1:
            release.wait(30)
        return {"attempt": step.attempts}

    backend.register(
        task_class(
            "hangs", [StepTemplate(name="stuck", handler=hang_once, timeout=0.5, retry_limit=2)]
        )
    )
    backend.register(task_class("other", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    task = backend.enqueue(TaskRequest(name="hangs"))
    seen = {}

    def watch():
        try:
            for _ in range(600):
                stuck = backend.get_task(task.task_id).steps["stuck"]
                if stuck.status == "error":
                    break
                release.wait(0.05)
            seen["stuck"] = stuck
            clock.advance(5)  # the retry is due now (but the lease still lives)
            backend.engine.run_task(task.task_id)  # a second pass: the lease is held
            other = backend.enqueue(TaskRequest(name="other"))
            backend.run_until_idle()
            seen["other"] = backend.get_task(other.task_id).status
            seen["calls"] = list(calls)
        finally:
            release.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    backend.run_until_idle()
    watcher.join(30)

    stuck = seen["stuck"]
    assert (stuck.status, stuck.attempts, stuck.results) == ("error", 1, None)
    assert stuck.error["error_class"].endswith("StepTimeoutError")
    assert "time limit of 0.5 s" in stuck.error["message"]
    assert seen["calls"] == [1]
    assert seen["other"] == "complete"
    done = backend.get_task(task.task_id)
    assert done.status == "complete"
    assert (done.steps["stuck"].attempts, done.steps["stuck"].results) == (2, {"attempt": 2})
    assert calls == [1, 2]
    chains = check_history(backend, task.task_id)
    assert "StepTimeoutError" in chains["stuck"][2].reason


def test_a_requested_older_version_runs_its_own_steps(backend):
    """Given versions 1.9.0 and 1.10.0 of a task,
    when one request names no version and another names 1.9.0,
    then the first runs 1.10.0 (numerically newest) and the second runs 1.9.0."""
    log = EventLog()
    for version in ("1.9.0", "1.10.0", "1.2.0"):
        step = "v" + version.replace(".", "_")
        backend.register(
            task_class("multi", [StepTemplate(name=step, handler=log.recorder())], version=version)
        )
    newest = backend.enqueue(TaskRequest(name="multi"))
    older = backend.enqueue(TaskRequest(name="multi", version="1.9.0"))
    backend.run_until_idle()
    assert backend.get_task(newest.task_id).version == "1.10.0"
    assert list(backend.get_task(older.task_id).steps) == ["v1_9_0"]
    assert sorted(log.of("start")) == ["v1_10_0", "v1_9_0"]
    with pytest.raises(errors.UnknownTaskError):
        backend.enqueue(TaskRequest(name="multi", version="3.0.0"))


# -- the audit trail -------------------------------------------------------------------


def _mixed_task(backend, calls):
    class Flaky(StepHandler):
        def handle(self, task, sequence, step):
            calls.append(step.attempts)
            if step.attempts < 3:
                raise RuntimeError(f"flaky {step.attempts}")
            return {"after": step.attempts}

    class Doomed(StepHandler):
        def handle(self, task, sequence, step):
            raise errors.PermanentError("declined")

    ok = lambda t, q, s: {}  # noqa: E731
    backend.register(
        task_class(
            "mixed",
            [
                StepTemplate(name="flaky", handler=Flaky, retry_limit=3),
                StepTemplate(name="after_flaky", handler=ok, depends_on=["flaky"]),
                StepTemplate(name="doomed", handler=Doomed, retry_limit=4),
                StepTemplate(name="blocked", handler=ok, depends_on=["doomed"]),
                StepTemplate(name="optional", handler=ok, skippable=True),
                StepTemplate(name="final", handler=ok, depends_on=["optional", "after_flaky"]),
            ],
        )
    )
    return backend.enqueue(TaskRequest(name="mixed", bypass_steps=["optional"]))


def test_the_history_records_every_change_in_order_and_matches_the_final_state(backend, clock):
    """Given a task with a flaky step, a permanently failing branch and a bypassed step,
    when it runs to its end, then every status change is in its history, in order, each
    allowed by the state machine, and the history ends in the state the task is in."""
    calls = []
    task = _mixed_task(backend, calls)
    done = settle(backend, clock, task.task_id)

    assert done.status == "error"
    assert calls == [1, 2, 3]
    chains = check_history(backend, task.task_id)
    assert [(t.from_status, t.to_status) for t in chains[None]] == [
        (None, "pending"),
        ("pending", "in_progress"),
        ("in_progress", "error"),
    ]
    assert [(t.from_status, t.to_status, t.attempt) for t in chains["flaky"]] == [
        (None, "pending", 0),
        ("pending", "in_progress", 1),
        ("in_progress", "error", 1),
        ("error", "in_progress", 2),
        ("in_progress", "error", 2),
        ("error", "in_progress", 3),
        ("in_progress", "complete", 3),
    ]
    assert "RuntimeError: flaky 1" in chains["flaky"][2].reason
    assert [(t.from_status, t.to_status) for t in chains["doomed"]] == [
        (None, "pending"),
        ("pending", "in_progress"),
        ("in_progress", "error"),
    ]
    assert "PermanentError: declined" in chains["doomed"][-1].reason
    assert [(t.from_status, t.to_status) for t in chains["optional"]] == [(None, "skipped")]
    assert [(t.from_status, t.to_status) for t in chains["blocked"]] == [(None, "pending")]
    assert "doomed" in chains[None][-1].reason
    assert done.steps["final"].status == "complete"


def test_the_history_keeps_the_order_of_changes_made_at_one_clock_reading(backend):
    """Given a task that fails and is resolved by hand and completes, all while the clock
    stands still, then its history still lists its changes in the order they happened."""

    def doomed(task, sequence, step):
        raise errors.PermanentError("down")

    backend.register(
        task_class(
            "frozen",
            [
                StepTemplate(name="a", handler=doomed),
                StepTemplate(name="b", handler=lambda t, q, s: {}, depends_on=["a"]),
            ],
        )
    )
    task = backend.enqueue(TaskRequest(name="frozen"))
    backend.run_until_idle()
    backend.resolve_step(task.task_id, "a")
    backend.run_until_idle()
    assert backend.get_task(task.task_id).status == "complete"
    own = [(t.from_status, t.to_status) for t in backend.history(task.task_id) if t.step is None]
    assert own == [
        (None, "pending"),
        ("pending", "in_progress"),
        ("in_progress", "error"),
        ("error", "in_progress"),
        ("in_progress", "complete"),
    ]


# -- annotations -----------------------------------------------------------------------


def test_update_annotations_receives_exactly_the_processed_steps_each_once(backend, clock):
    """Given a task whose first step fails once, and update_annotations recording its calls,
    when the task runs to completion, then every attempt's outcome was handed over exactly
    once, with its status, and annotations from handlers and from the hook are stored."""
    seen = []
    lock = threading.Lock()

    def annotate(self, task, sequence, steps):
        with lock:
            seen.append([(s.name, s.status, s.attempts) for s in steps])
        for s in steps:
            task.annotate("audit", {"step": s.name, "status": s.status})

    class FailsOnce(StepHandler):
        def handle(self, task, sequence, step):
            task.annotate("from_handler", {"attempt": step.attempts})
            if step.attempts == 1:
                raise RuntimeError("first try")
            return {}

    ok = lambda t, q, s: {}  # noqa: E731
    backend.register(
        task_class(
            "annotated",
            [
                StepTemplate(name="a", handler=FailsOnce),
                StepTemplate(name="b", handler=ok, depends_on=["a"]),
                StepTemplate(name="c", handler=ok),
            ],
            annotate=annotate,
        )
    )
    task = backend.enqueue(TaskRequest(name="annotated"))
    assert settle(backend, clock, task.task_id).status == "complete"

    for batch in seen:
        assert len({name for name, _, _ in batch}) == len(batch), f"a step twice in {batch}"
    flat = sorted(item for batch in seen for item in batch)
    assert flat == [
        ("a", "complete", 2),
        ("a", "error", 1),
        ("b", "complete", 1),
        ("c", "complete", 1),
    ]
    audit = backend.annotations(annotation_type="audit", task_id=task.task_id)
    assert sorted((a.annotation["step"], a.annotation["status"]) for a in audit) == [
        ("a", "complete"),
        ("a", "error"),
        ("b", "complete"),
        ("c", "complete"),
    ]
    from_handler = backend.annotations(annotation_type="from_handler")
    assert sorted(a.annotation["attempt"] for a in from_handler) == [1, 2]


def test_a_failing_update_annotations_is_recorded_and_the_task_still_completes(backend):
    """Given an update_annotations that raises, when the task runs, then the failure is
    stored as a tasker.update_annotations_error annotation and the task completes."""

    def annotate(self, task, sequence, steps):
        raise LookupError("no such audit table")

    backend.register(
        task_class(
            "bad_hook",
            [
                StepTemplate(name="a", handler=lambda t, q, s: {}),
                StepTemplate(name="b", handler=lambda t, q, s: {}, depends_on=["a"]),
            ],
            annotate=annotate,
        )
    )
    task = backend.enqueue(TaskRequest(name="bad_hook"))
    backend.run_until_idle()

    done = backend.get_task(task.task_id)
    assert done.status == "complete"
    notes = backend.annotations(annotation_type="tasker.update_annotations_error")
    assert len(notes) == 2  # one per round of processed steps
    assert {n.task_id for n in notes} == {task.task_id}
    for note in notes:
        assert note.annotation["message"] == "no such audit table"
        assert note.annotation["error_class"] == "builtins.LookupError"
        assert "LookupError" in note.annotation["backtrace"]
    assert [a.annotation_type for a in done.annotations] == ["tasker.update_annotations_error"] * 2


# -- messages: lost, delayed, duplicated ------------------------------------------------


def test_a_task_whose_message_was_lost_still_runs(backend, clock):
    """Given an enqueued task whose message is lost, and a retry whose delayed message is
    lost too, when run_until_idle runs (at the retry's time), then the task completes: the
    database, not the broker, says what is due."""
    calls = []

    def fails_once(task, sequence, step):
        calls.append(step.attempts)
        if step.attempts == 1:
            raise errors.RetryableError("later", retry_after=10)
        return {}

    backend.register(task_class("lossy", [StepTemplate(name="s", handler=fails_once)]))
    task = backend.enqueue(TaskRequest(name="lossy"))
    assert backend.dispatch.drain() == [task.task_id]  # the message existed; now it is gone
    assert backend.dispatch.drain() == []

    backend.run_until_idle()
    assert calls == [1]
    backend.dispatch.drain()  # the delayed message for the retry is lost as well
    clock.advance(9)
    backend.run_until_idle()
    assert calls == [1]
    clock.advance(2)
    backend.run_until_idle()
    assert calls == [1, 2]
    assert backend.get_task(task.task_id).status == "complete"


def test_duplicate_messages_are_harmless(backend, release):
    """Given extra messages for a task, before, during and after its run, and passes
    started for it while its step is running, then the step runs exactly once."""
    calls = []
    started = threading.Event()

    def slow(task, sequence, step):
        calls.append(step.attempts)
        started.set()
        release.wait(30)
        return {}

    backend.register(task_class("dup", [StepTemplate(name="s", handler=slow)]))
    task = backend.enqueue(TaskRequest(name="dup"))
    for _ in range(3):
        backend.dispatch.send(task.task_id)

    runner = threading.Thread(target=backend.engine.run_task, args=(task.task_id,))
    runner.start()
    try:
        assert started.wait(10)
        for _ in range(3):
            backend.dispatch.send(task.task_id)
            backend.engine.run_task(task.task_id)  # the lease is held: a no-op
        backend.run_until_idle()  # drains the duplicates; nothing is due
        assert calls == [1]
        assert backend.get_task(task.task_id).steps["s"].status == "in_progress"
    finally:
        release.set()
        runner.join(30)
    assert not runner.is_alive()
    backend.run_until_idle()
    for _ in range(2):
        backend.dispatch.send(task.task_id)
    backend.run_until_idle()
    done = backend.get_task(task.task_id)
    assert (done.status, done.steps["s"].attempts, calls) == ("complete", 1, [1])
    check_history(backend, task.task_id)


# -- leases ----------------------------------------------------------------------------


def _claim_and_die(app, task_id, step_name):
    """Another worker claims the task, starts a step, and dies without finishing."""
    step = app.get_task(task_id).steps[step_name]
    now = app.now()
    until = now + timedelta(seconds=app.settings.lease_seconds)
    got = app.store.claim(task_id, "dead-worker", now, until)
    assert got is not None
    started = replace(step, status="in_progress", attempts=1, last_attempted_at=now)
    change = StepChange(
        step.workflow_step_id, step_name, Status.PENDING, Status.IN_PROGRESS, 1, "started"
    )
    app.store.apply(
        leases.TaskWrite(
            got.lease, got.task["revision"], now, until, steps=[started], step_changes=[change]
        )
    )
    return got


def test_an_expired_lease_makes_the_in_progress_step_a_failed_attempt_that_is_retried(
    backend, clock
):
    """Given a worker that claimed a task, started its step and died,
    when the lease has not expired, then nobody runs the step again;
    when it has, then the step is recorded as a failed attempt ("worker lost"), retried
    after its backoff, and the dead worker's fenced writes are refused."""
    calls = []

    def work(task, sequence, step):
        calls.append(step.attempts)
        return {"attempt": step.attempts}

    backend.register(task_class("leased", [StepTemplate(name="s", handler=work, retry_limit=3)]))
    task = backend.enqueue(TaskRequest(name="leased"))
    stale = _claim_and_die(backend, task.task_id, "s")

    clock.advance(backend.settings.lease_seconds - 1)
    backend.run_until_idle()
    assert calls == []
    assert backend.get_task(task.task_id).steps["s"].status == "in_progress"
    with pytest.raises(errors.InvalidTransitionError):
        backend.resolve_step(task.task_id, "s")  # a running step cannot be resolved

    clock.advance(2)
    backend.run_until_idle()
    lost = backend.get_task(task.task_id).steps["s"]
    assert calls == []
    assert (lost.status, lost.attempts) == ("error", 1)
    assert lost.error["message"].startswith("worker lost")
    assert lost.error["error_class"].endswith("WorkerLostError")
    assert lost.next_attempt_at is not None

    renewal = leases.TaskWrite(stale.lease, stale.task["revision"], backend.now(), backend.now())
    with pytest.raises(errors.LeaseLostError):
        backend.store.apply(renewal)

    clock.advance(backend.settings.backoff_max)
    backend.run_until_idle()
    done = backend.get_task(task.task_id)
    assert done.status == "complete"
    assert (done.steps["s"].attempts, done.steps["s"].results) == (2, {"attempt": 2})
    assert calls == [2]
    chains = check_history(backend, task.task_id)
    assert "WorkerLostError" in chains["s"][2].reason


def test_an_expired_lease_on_the_last_attempt_fails_the_task(backend, clock):
    """Given a one-attempt step left in progress by a dead worker,
    when its lease expires, then the attempt is used up and the task is in error."""
    calls = []

    def work(task, sequence, step):
        calls.append(step.attempts)
        return {}

    backend.register(task_class("last", [StepTemplate(name="s", handler=work, retry_limit=1)]))
    task = backend.enqueue(TaskRequest(name="last"))
    _claim_and_die(backend, task.task_id, "s")
    clock.advance(backend.settings.lease_seconds + 1)
    done = settle(backend, clock, task.task_id)
    assert done.status == "error"
    assert (done.steps["s"].status, done.steps["s"].attempts) == ("error", 1)
    assert "worker lost" in done.steps["s"].error["message"]
    assert calls == []
    check_history(backend, task.task_id)


# -- steering ---------------------------------------------------------------------------


def test_cancel_while_a_step_waits_for_its_retry(backend, clock):
    """Given a step waiting for its retry and a dependent pending,
    when the task is cancelled, then the task and both steps are cancelled, the retry
    never happens, cancelling again is harmless and nothing else can be steered."""
    calls = []

    def later(task, sequence, step):
        calls.append(step.attempts)
        raise errors.RetryableError("busy", retry_after=60)

    backend.register(
        task_class(
            "cancellable",
            [
                StepTemplate(name="wait", handler=later),
                StepTemplate(name="next", handler=lambda t, q, s: {}, depends_on=["wait"]),
            ],
        )
    )
    task = backend.enqueue(TaskRequest(name="cancellable"))
    backend.run_until_idle()
    waiting = backend.get_task(task.task_id).steps["wait"]
    assert (waiting.status, waiting.next_attempt_at is not None) == ("error", True)

    view = backend.cancel(task.task_id)
    assert view.status == "cancelled"
    assert {n: s.status for n, s in view.steps.items()} == {
        "wait": "cancelled",
        "next": "cancelled",
    }
    assert view.steps["wait"].next_attempt_at is None
    clock.advance(3600)
    backend.run_until_idle()
    assert calls == [1]
    assert backend.cancel(task.task_id).status == "cancelled"
    with pytest.raises(errors.InvalidTransitionError):
        backend.retry(task.task_id)
    with pytest.raises(errors.InvalidTransitionError):
        backend.resolve_step(task.task_id, "next")
    chains = check_history(backend, task.task_id)
    assert [(t.from_status, t.to_status) for t in chains["wait"]][-1] == ("error", "cancelled")


def test_a_finished_task_cannot_be_cancelled(backend):
    backend.register(task_class("quick", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    task = backend.enqueue(TaskRequest(name="quick"))
    backend.run_until_idle()
    with pytest.raises(errors.InvalidTransitionError):
        backend.cancel(task.task_id)
    assert backend.get_task(task.task_id).status == "complete"


def test_resolving_a_pending_step_blocked_behind_a_failed_step(backend, clock):
    """Given a chain failed -> blocked -> tail where the first step failed for good,
    when the blocked step is resolved by hand, then its dependent runs with the given
    results, the task is in error again (the failed step is still failed), and resolving
    the failed step too completes the task."""
    seen = []

    def tail(task, sequence, step):
        seen.append(sequence.step("blocked").results)
        return {}

    def doomed(task, sequence, step):
        raise errors.PermanentError("down")

    backend.register(
        task_class(
            "blocked_chain",
            [
                StepTemplate(name="failed", handler=doomed),
                StepTemplate(name="blocked", handler=lambda t, q, s: {}, depends_on=["failed"]),
                StepTemplate(name="tail", handler=tail, depends_on=["blocked"]),
            ],
        )
    )
    task = backend.enqueue(TaskRequest(name="blocked_chain"))
    assert settle(backend, clock, task.task_id).status == "error"
    clock.advance(1)  # see test_the_history_keeps_the_order_of_changes_made_at_one_clock_reading

    view = backend.resolve_step(task.task_id, "blocked", results={"by": "ops"})
    assert view.steps["blocked"].status == "resolved_manually"
    assert view.steps["blocked"].results == {"by": "ops"}
    assert view.status == "in_progress"
    done = settle(backend, clock, task.task_id)
    assert seen == [{"by": "ops"}]
    assert done.steps["tail"].status == "complete"
    assert done.steps["failed"].status == "error"
    assert done.status == "error"

    clock.advance(1)
    backend.resolve_step(task.task_id, "failed")
    done = settle(backend, clock, task.task_id)
    assert done.status == "complete"
    assert done.steps["failed"].results is None
    assert seen == [{"by": "ops"}]
    chains = check_history(backend, task.task_id)
    assert [t.to_status for t in chains[None]] == [
        "pending",
        "in_progress",
        "error",
        "in_progress",
        "error",
        "in_progress",
        "complete",
    ]


def test_resolve_step_refuses_done_steps_bad_results_and_unknown_steps(backend):
    backend.register(
        task_class(
            "resolvable",
            [
                StepTemplate(name="a", handler=lambda t, q, s: {}),
                StepTemplate(
                    name="b", handler=lambda t, q, s: {}, depends_on=["a"], skippable=True
                ),
            ],
        )
    )
    pending = backend.enqueue(TaskRequest(name="resolvable", bypass_steps=["b"]))
    with pytest.raises(errors.InvalidTransitionError):
        backend.resolve_step(pending.task_id, "b")  # skipped is final
    with pytest.raises(errors.StepNotFoundError, match="ghost"):
        backend.resolve_step(pending.task_id, "ghost")
    for bad in ([1], "done", {"x": math.nan}, {1: "a"}):
        with pytest.raises(errors.InvalidRequestError):
            backend.resolve_step(pending.task_id, "a", results=bad)
    assert backend.get_task(pending.task_id).steps["a"].status == "pending"
    backend.run_until_idle()
    with pytest.raises(errors.InvalidTransitionError):
        backend.resolve_step(pending.task_id, "a")  # the task is complete


def test_retry_needs_a_step_in_final_error(backend, clock):
    """Given a pending task, a task whose step awaits its retry, and a completed task,
    when retry() is called on each, then each is an InvalidTransitionError and nothing
    changes."""
    attempts = []

    def flaky(task, sequence, step):
        attempts.append(step.attempts)
        if step.attempts == 1:
            raise RuntimeError("once")
        return {}

    backend.register(task_class("retryable", [StepTemplate(name="s", handler=flaky)]))
    task = backend.enqueue(TaskRequest(name="retryable"))
    with pytest.raises(errors.InvalidTransitionError, match="no step in final error"):
        backend.retry(task.task_id)
    backend.run_until_idle()
    with pytest.raises(errors.InvalidTransitionError, match="no step in final error"):
        backend.retry(task.task_id)
    assert backend.get_task(task.task_id).steps["s"].attempts == 1
    settle(backend, clock, task.task_id)
    with pytest.raises(errors.InvalidTransitionError):
        backend.retry(task.task_id)
    assert attempts == [1, 2]


def test_retry_gives_a_fresh_budget_and_the_history_restarts_the_attempt_count(backend, clock):
    state = {"broken": True}

    def fixable(task, sequence, step):
        if state["broken"]:
            raise RuntimeError("bug")
        return {"attempt": step.attempts}

    backend.register(
        task_class("fixable", [StepTemplate(name="x", handler=fixable, retry_limit=2)])
    )
    task = backend.enqueue(TaskRequest(name="fixable"))
    assert settle(backend, clock, task.task_id).steps["x"].attempts == 2
    state["broken"] = False
    clock.advance(1)
    view = backend.retry(task.task_id)
    assert (view.status, view.steps["x"].status, view.steps["x"].attempts) == (
        "in_progress",
        "pending",
        0,
    )
    done = settle(backend, clock, task.task_id)
    assert (done.status, done.steps["x"].results) == ("complete", {"attempt": 1})
    chains = check_history(backend, task.task_id)
    assert [t.attempt for t in chains["x"] if t.to_status == "in_progress"] == [1, 2, 1]


def _run_in_background(app):
    runner = threading.Thread(target=app.run_until_idle, daemon=True)
    runner.start()
    return runner


def _wait_for(predicate, release):
    for _ in range(600):
        if predicate():
            return
        release.wait(0.05)
    raise AssertionError("the condition never came true")


def test_resolving_a_step_while_the_task_runs_is_seen_by_the_running_pass(backend, release):
    """Given a pass running a slow step while a sibling failed for good,
    when the failed step is resolved by hand meanwhile, then the running pass re-reads the
    steps, runs the resolved step's dependent and completes the task."""
    started = threading.Event()

    def slow(task, sequence, step):
        started.set()
        release.wait(30)
        return {}

    def doomed(task, sequence, step):
        raise errors.PermanentError("down")

    backend.register(
        task_class(
            "steered",
            [
                StepTemplate(name="slow", handler=slow),
                StepTemplate(name="doomed", handler=doomed),
                StepTemplate(name="after", handler=lambda t, q, s: {}, depends_on=["doomed"]),
            ],
        )
    )
    task = backend.enqueue(TaskRequest(name="steered"))
    runner = _run_in_background(backend)
    try:
        assert started.wait(10)
        _wait_for(lambda: backend.get_task(task.task_id).steps["doomed"].status == "error", release)
        backend.resolve_step(task.task_id, "doomed", results={"by": "ops"})
    finally:
        release.set()
        runner.join(30)
    assert not runner.is_alive()
    done = backend.get_task(task.task_id)
    assert done.status == "complete"
    assert done.steps["after"].status == "complete"
    check_history(backend, task.task_id)


def test_cancelling_a_task_while_its_step_runs_stops_it_there(backend, release):
    """Given a pass running a step with a dependent waiting,
    when the task is cancelled meanwhile, then the step's late result is not stored, the
    dependent never runs, and the task stays cancelled."""
    started = threading.Event()
    log = EventLog()

    def slow(task, sequence, step):
        started.set()
        release.wait(30)
        return {"late": True}

    backend.register(
        task_class(
            "cancelled_midway",
            [
                # A short time limit: see test_a_pass_that_lost_its_lease_returns_at_once.
                StepTemplate(name="slow", handler=slow, timeout=1.5),
                StepTemplate(name="after", handler=log.recorder(), depends_on=["slow"]),
            ],
        )
    )
    task = backend.enqueue(TaskRequest(name="cancelled_midway"))
    runner = _run_in_background(backend)
    try:
        assert started.wait(10)
        backend.cancel(task.task_id)
    finally:
        release.set()
        runner.join(30)
    assert not runner.is_alive()
    backend.run_until_idle()
    done = backend.get_task(task.task_id)
    assert done.status == "cancelled"
    assert {n: s.status for n, s in done.steps.items()} == {
        "slow": "cancelled",
        "after": "cancelled",
    }
    assert done.steps["slow"].results is None
    assert log.of("start") == []
    check_history(backend, task.task_id)


def test_a_pass_that_lost_its_lease_returns_at_once(sqlite_url, clock, clean_env, release):
    """Given a pass running a step (time limit 12 s) of a task cancelled meanwhile,
    when the step returns, then the pass ends: it does not wait out the time limit."""
    app = Tasker(database_url=sqlite_url, clock=clock)
    app.migrate()
    started = threading.Event()

    def slow(task, sequence, step):
        started.set()
        release.wait(30)
        return {}

    app.register(task_class("cut", [StepTemplate(name="slow", handler=slow, timeout=12)]))
    task = app.enqueue(TaskRequest(name="cut"))
    runner = _run_in_background(app)
    try:
        assert started.wait(10)
        app.cancel(task.task_id)
        release.set()
        runner.join(5)  # generous: the pass has nothing left to do once the step returned
        assert not runner.is_alive(), "the pass is waiting out the step's time limit"
    finally:
        release.set()
        runner.join(30)
        app.close()


def test_a_worker_that_does_not_know_the_handler_hands_the_task_back(make_app, clock):
    """Given two apps on one database, only the first registering the task's handler,
    when the second runs first, then it leaves the task untouched for later; when the
    first runs once that time comes, then the task completes."""
    knows, ignorant = make_app(), make_app()
    log = EventLog()
    knows.register(task_class("known_here", [StepTemplate(name="s", handler=log.recorder())]))
    task = knows.enqueue(TaskRequest(name="known_here"))
    knows.dispatch.drain()

    ignorant.run_until_idle()
    held = knows.get_task(task.task_id)
    assert held.status in ("pending", "in_progress")
    assert held.steps["s"].attempts == 0 and log.of("start") == []
    knows.run_until_idle()
    assert log.of("start") == []  # handed back for lease_seconds
    clock.advance(ignorant.settings.lease_seconds + 1)
    knows.run_until_idle()
    assert knows.get_task(task.task_id).status == "complete"
    assert log.of("start") == ["s"]


def test_any_value_that_names_no_task_is_task_not_found(backend):
    """Given values that are not ids of a task (wrong type, not positive, or unused),
    when any inspecting or steering call gets one, then it raises TaskNotFoundError."""
    backend.register(task_class("real", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    real = backend.enqueue(TaskRequest(name="real")).task_id
    unused = real + 10**12
    for bad_id in ["abc", str(real), -1, 0, True, False, float(real), None, unused]:
        for call in (
            backend.get_task,
            backend.history,
            backend.cancel,
            backend.retry,
            lambda i: backend.resolve_step(i, "s"),
        ):
            with pytest.raises(errors.TaskNotFoundError):
                call(bad_id)
        if bad_id not in (None, unused):  # None: every task; an unused id: no annotations
            with pytest.raises(errors.TaskNotFoundError):
                backend.annotations(task_id=bad_id)
    assert backend.annotations(task_id=unused) == []
    assert backend.get_task(real).status == "pending"


def test_list_tasks_is_newest_first_filtered_and_checked(backend):
    backend.register(task_class("alpha", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    backend.register(task_class("beta", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    ids = [backend.enqueue(TaskRequest(name=n)).task_id for n in ("alpha", "beta", "alpha")]
    backend.run_until_idle()
    fresh = backend.enqueue(TaskRequest(name="alpha")).task_id
    assert [t.task_id for t in backend.list_tasks()] == [fresh, *reversed(ids)]
    assert [t.task_id for t in backend.list_tasks(name="alpha", limit=2)] == [fresh, ids[2]]
    assert [t.task_id for t in backend.list_tasks(status="pending")] == [fresh]
    assert backend.list_tasks(name="gamma") == []
    for bad in ({"status": "done"}, {"limit": 0}, {"limit": True}, {"limit": "5"}):
        with pytest.raises(errors.InvalidRequestError):
            backend.list_tasks(**bad)


# -- annotations: JSON containment -----------------------------------------------------

DOCUMENTS = {
    "eu_order": {"region": "eu", "order": {"id": 1, "lines": [{"sku": "A", "qty": 2}]}},
    "us_order": {"region": "us", "order": {"id": 2, "lines": [{"sku": "B", "qty": 1}]}},
    "tagged": {"region": "eu", "tags": ["vip", "gift"], "flags": {"rush": True, "n": 0}},
    "plain": {"region": "eu", "count": 1, "ratio": 1.5, "none": None},
}
CONTAINS = [
    ({"region": "eu"}, {"eu_order", "tagged", "plain"}),
    ({"order": {"id": 2}}, {"us_order"}),
    ({"order": {"lines": [{"sku": "A"}]}}, {"eu_order"}),
    ({"order": {"lines": [{"sku": "A", "qty": 1}]}}, set()),
    ({"order": {"lines": []}}, {"eu_order", "us_order"}),
    ({"tags": ["gift"]}, {"tagged"}),
    ({"tags": ["gift", "vip"]}, {"tagged"}),
    ({"tags": ["gift", "other"]}, set()),
    ({"tags": "gift"}, set()),
    ({"flags": {"rush": True}}, {"tagged"}),
    ({"flags": {"rush": 1}}, set()),
    ({"flags": {"n": False}}, set()),
    ({"flags": {"n": 0}}, {"tagged"}),
    ({"count": 1.0}, {"plain"}),
    ({"count": "1"}, set()),
    ({"ratio": 1.5}, {"plain"}),
    ({"none": None}, {"plain"}),
    ({"missing": None}, set()),
    ({}, set(DOCUMENTS)),
    ({"region": "eu", "count": 1}, {"plain"}),
]


@pytest.fixture
def annotated(backend):
    """One task per document, each annotated with its document (type "doc")."""

    def annotate(self, task, sequence, steps):
        task.annotate("doc", task.context["doc"])
        task.annotate("other", {"region": "eu"})

    backend.register(
        task_class("docs", [StepTemplate(name="s", handler=lambda t, q, s: {})], annotate=annotate)
    )
    ids = {}
    for label, doc in DOCUMENTS.items():
        ids[backend.enqueue(TaskRequest(name="docs", context={"doc": doc})).task_id] = label
    backend.run_until_idle()
    return ids


def test_annotations_containment_on_nested_objects_and_arrays(backend, annotated):
    """Given annotations with nested objects and arrays, when filtered by containment,
    then exactly the annotations PostgreSQL's @> would pick are returned, on either backend."""
    for pattern, expected in CONTAINS:
        found = backend.annotations(annotation_type="doc", contains=pattern)
        assert {annotated[a.task_id] for a in found} == expected, pattern
        for a in found:
            assert a.annotation == DOCUMENTS[annotated[a.task_id]]


def test_annotations_filters_combine(backend, annotated):
    tagged = next(i for i, label in annotated.items() if label == "tagged")
    assert len(backend.annotations(contains={"region": "eu"})) == 3 + 4
    assert len(backend.annotations(task_id=tagged)) == 2
    assert len(backend.annotations(annotation_type="other", task_id=tagged)) == 1
    assert backend.annotations(annotation_type="nope") == []
    for bad in ([1], "x", {"x": math.nan}):
        with pytest.raises(errors.InvalidRequestError):
            backend.annotations(contains=bad)


def test_containment_on_keys_with_json_path_characters(backend):
    """Given annotations whose keys hold '.', '$', '[' and '"', when filtered by them,
    then the match is exact on either backend."""
    doc = {"a.b": 1, "$x": [2], "c[0]": {"d": 3}, 'say "hi"': "yes"}

    def annotate(self, task, sequence, steps):
        task.annotate("keys", doc)

    backend.register(
        task_class("keys", [StepTemplate(name="s", handler=lambda t, q, s: {})], annotate=annotate)
    )
    backend.enqueue(TaskRequest(name="keys"))
    backend.run_until_idle()
    for key, value in doc.items():
        assert len(backend.annotations(contains={key: value})) == 1, key
    assert backend.annotations(contains={"a": {"b": 1}}) == []


# -- enqueue ----------------------------------------------------------------------------


def test_concurrent_enqueues_with_one_idempotency_key_create_one_task(backend):
    """Given four threads enqueueing the same request with the same key at once,
    then they all get the same task, only one task exists and one message was sent."""
    backend.register(task_class("idem", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    backend.enqueue(TaskRequest(name="idem", idempotency_key="warm-up"))  # catalog rows exist
    backend.dispatch.drain()
    sent = messages_sent(backend)
    barrier = threading.Barrier(4, timeout=10)
    results, failures = [], []

    def enqueue():
        try:
            barrier.wait()
            results.append(
                backend.enqueue(
                    TaskRequest(name="idem", context={"order": 42}, idempotency_key="order-42")
                ).task_id
            )
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=enqueue) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert failures == []
    assert len(results) == 4 and len(set(results)) == 1
    assert [t.idempotency_key for t in backend.list_tasks()].count("order-42") == 1
    assert messages_sent(backend) - sent == 1
    assert backend.dispatch.drain() == results[:1]


def test_a_rejected_request_stores_and_sends_nothing(backend):
    backend.register(
        task_class(
            "strict",
            [StepTemplate(name="s", handler=lambda t, q, s: {})],
            schema={"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}},
        )
    )
    bad = [
        TaskRequest(name="strict", context={"n": "x"}),
        TaskRequest(name="strict", context={"n": 1, "f": math.inf}),
        TaskRequest(name="strict", context={"n": 1}, tags="vip"),
        TaskRequest(name="strict", context={"n": 1}, bypass_steps=["s"]),
    ]
    for req in bad:
        with pytest.raises(errors.InvalidRequestError):
            backend.enqueue(req)
    with pytest.raises(errors.InvalidRequestError):
        backend.enqueue({"name": "strict"})
    assert backend.list_tasks() == []
    assert backend.dispatch.drain() == []
    with backend.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(m.outbox)).scalar() == 0


def test_results_and_contexts_postgresql_cannot_store_are_rejected_alike(backend):
    """Given a step returning a string with a NUL character, when it runs, then the attempt
    fails with a clear error (on either backend); and such a context is an invalid request."""
    backend.register(
        task_class(
            "nul", [StepTemplate(name="s", handler=lambda t, q, s: {"s": "a\x00b"}, retry_limit=1)]
        )
    )
    task = backend.enqueue(TaskRequest(name="nul"))
    backend.run_until_idle()
    step = backend.get_task(task.task_id).steps["s"]
    assert step.status == "error"
    assert step.error["error_class"].endswith("InvalidResultError")
    with pytest.raises(errors.InvalidRequestError):
        backend.enqueue(TaskRequest(name="nul", context={"note": "a\x00b"}))


# -- the sweeper ------------------------------------------------------------------------


def _outbox(app, task_id):
    with app.db.read() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(m.outbox).where(m.outbox.c.task_id == task_id)
        ).scalar()


def test_the_sweeper_resends_a_task_whose_enqueue_crashed_before_sending(backend, clock):
    """Given a pending task whose message never reached the broker (only its outbox row
    exists), when a sweep runs before the grace period, then nothing is sent; after it,
    the task is sent once and its outbox row is gone; and the task then runs."""
    backend.register(task_class("swept", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    task = backend.enqueue(TaskRequest(name="swept"))
    backend.dispatch.drain()  # "crashed" before the send
    assert _outbox(backend, task.task_id) == 1

    clock.advance(backend.settings.sweep_seconds / 2)
    assert backend.sweeper.sweep() == 0
    assert backend.dispatch.drain() == []

    clock.advance(backend.settings.sweep_seconds)
    assert backend.sweeper.sweep() == 1
    assert backend.dispatch.drain() == [task.task_id]
    assert _outbox(backend, task.task_id) == 0
    backend.run_until_idle()
    assert backend.get_task(task.task_id).status == "complete"


def test_the_sweeper_sends_a_leftover_outbox_row_but_throttles_due_tasks(backend, clock):
    """Given a due task the sweeper already re-sent, and then an outbox row written by hand
    for it, when sweeps run within lease_seconds, then the outbox row is sent once and the
    task itself is not re-sent; after lease_seconds it is re-sent again."""
    backend.register(task_class("throttled", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    task = backend.enqueue(TaskRequest(name="throttled"))
    backend.dispatch.drain()
    grace = backend.settings.sweep_seconds + 1
    clock.advance(grace)
    assert backend.sweeper.sweep() == 1
    assert backend.dispatch.drain() == [task.task_id]

    now = backend.now()
    with backend.db.write() as conn:
        conn.execute(
            m.outbox.insert(), {"task_id": task.task_id, "deliver_at": now, "created_at": now}
        )
    clock.advance(grace)
    assert backend.sweeper.sweep() == 1  # the outbox row
    assert backend.dispatch.drain() == [task.task_id]
    assert _outbox(backend, task.task_id) == 0
    clock.advance(grace)
    assert backend.sweeper.sweep() == 0  # re-sent within lease_seconds
    assert backend.dispatch.drain() == []

    clock.advance(backend.settings.lease_seconds)
    assert backend.sweeper.sweep() == 1
    assert backend.dispatch.drain() == [task.task_id]


def test_the_sweeper_resends_a_task_whose_lease_expired(backend, clock):
    """Given a task claimed by a worker that died, when sweeps run, then the task is not
    sent while the lease lives, is sent once it expired, and then completes."""
    backend.register(task_class("abandoned", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    task = backend.enqueue(TaskRequest(name="abandoned"))
    backend.dispatch.drain()
    until = backend.now() + timedelta(seconds=backend.settings.lease_seconds)
    assert backend.store.claim(task.task_id, "dead", backend.now(), until)
    assert _outbox(backend, task.task_id) == 0  # the claim consumed the announcement

    clock.advance(backend.settings.sweep_seconds + 1)
    assert backend.sweeper.sweep() == 0
    clock.advance(backend.settings.lease_seconds)
    assert backend.sweeper.sweep() == 1
    assert backend.dispatch.drain() == [task.task_id]
    backend.run_until_idle()
    assert backend.get_task(task.task_id).status == "complete"
    clock.advance(backend.settings.lease_seconds * 2)
    assert backend.sweeper.sweep() == 0  # finished tasks are never re-sent


def test_the_sweeper_leaves_retries_that_are_not_due_alone(backend, clock):
    def later(task, sequence, step):
        raise errors.RetryableError("later", retry_after=3600)

    backend.register(task_class("patient", [StepTemplate(name="s", handler=later)]))
    task = backend.enqueue(TaskRequest(name="patient"))
    backend.run_until_idle()
    backend.dispatch.drain()
    clock.advance(600)
    assert backend.sweeper.sweep() == 0
    clock.advance(3600)
    assert backend.sweeper.sweep() == 1
    assert backend.dispatch.drain() == [task.task_id]


# -- time ------------------------------------------------------------------------------


def test_every_datetime_returned_is_timezone_aware_utc(backend, clock):
    """Given a request time in UTC+05:30 and a step that fails, then every datetime of the
    task, its steps, its history and its annotations is aware UTC (the same instants)."""

    def annotate(self, task, sequence, steps):
        task.annotate("seen", {"n": len(steps)})

    def fails(task, sequence, step):
        raise RuntimeError("again")

    backend.register(
        task_class(
            "times",
            [
                StepTemplate(name="ok", handler=lambda t, q, s: {}),
                StepTemplate(name="fails", handler=fails, retry_limit=2),
            ],
            annotate=annotate,
        )
    )
    asked = datetime(2024, 5, 1, 17, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    task = backend.enqueue(TaskRequest(name="times", requested_at=asked))
    assert_utc(task.requested_at)
    backend.run_until_idle()

    views = [backend.get_task(task.task_id), *backend.list_tasks()]
    for view in views:
        assert view.requested_at == asked
        assert_utc(view.requested_at)
        assert_utc(view.completed_at)
        assert_utc(view.next_run_at)
        for step in view.steps.values():
            for value in (step.last_attempted_at, step.next_attempt_at, step.processed_at):
                assert_utc(value)
    waiting = views[0].steps["fails"]
    assert waiting.next_attempt_at is not None and waiting.next_attempt_at > backend.now()
    assert waiting.last_attempted_at == backend.now()
    for note in backend.annotations():
        assert_utc(note.created_at)
    for change in backend.history(task.task_id):
        assert_utc(change.created_at)
    done = settle(backend, clock, task.task_id)
    assert_utc(done.completed_at)
    assert done.steps["ok"].processed_at is not None
