"""What an outcome makes of its step (tasker.core.flow.record_outcome), and the control calls."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tasker.core import flow
from tasker.core.flow import Attempt, Rules, record_outcome
from tasker.core.views import StepView
from tasker.definition.template import StepTemplate
from tasker.engine.outcome import Outcome, run_handler
from tasker.engine.runtime import HandlerStep, HandlerTask, StepSequence
from tasker.errors import InvalidStateError

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
BACKOFF = (1.0, 60.0)


def running(attempts: int = 1, reattempts: int = 0) -> StepView:
    """A step just launched: its attempt counted at launch."""
    return StepView(
        7, "poll", "in_progress", attempts, 3, True, False, (), "default", None, None, None,
        NOW, None, None, reattempts,
    )  # fmt: skip


def test_a_reattempt_is_not_an_attempt_and_is_due_after_its_wait():
    """Given a run that asks to reattempt in 300 s, Then the step is pending, due then, with
    its launch uncounted and one reattempt more; the history says reattempt."""
    rec = record_outcome(
        running(2, 1),
        Attempt("poll", ok=False, flow="reattempt", wait=300),
        Rules(),
        NOW,
        NOW,
        BACKOFF,
    )
    v = rec.view
    assert (v.status, v.attempts, v.reattempts) == ("pending", 1, 2)
    assert v.next_attempt_at == NOW + timedelta(seconds=300)
    assert "reattempt" in rec.reason and rec.halt is None


def test_the_reattempt_after_max_reattempts_fails_the_step_for_good():
    """Given max_reattempts=2 and two reattempts made, When a third is asked, Then the step
    fails for good with ReattemptLimitError."""
    rec = record_outcome(
        running(1, 2), Attempt("poll", ok=False, flow="reattempt", wait=10),
        Rules(max_reattempts=2), NOW, NOW, BACKOFF,
    )  # fmt: skip
    assert rec.view.status == "error" and rec.view.next_attempt_at is None
    assert rec.view.error is not None
    assert rec.view.error["error_class"].endswith("ReattemptLimitError")
    assert rec.view.reattempts == 2


def test_a_reattempt_that_would_run_past_wait_timeout_fails_with_wait_timeout_error():
    """Given wait_timeout 1 h from satisfaction, When a reattempt would run at or past it,
    Then the step fails for good with WaitTimeoutError; one before it is granted."""
    since = NOW - timedelta(minutes=50)
    rules = Rules(wait_timeout=3600)
    late = record_outcome(
        running(), Attempt("poll", ok=False, flow="reattempt", wait=600), rules, NOW, since, BACKOFF
    )
    assert late.view.status == "error"
    assert late.view.error is not None
    assert late.view.error["error_class"].endswith("WaitTimeoutError")
    ok = record_outcome(
        running(), Attempt("poll", ok=False, flow="reattempt", wait=300), rules, NOW, since, BACKOFF
    )
    assert ok.view.status == "pending"


@pytest.mark.parametrize(
    ("kind", "status", "halt"),
    [("skip", "skipped", None), ("pause", "pending", "pause"), ("cancel", "cancelled", "cancel")],
)
def test_skip_pause_and_cancel_leave_the_step_and_ask_the_task(kind, status, halt):
    """Given a run ending with skip, pause or cancel, Then the step's new status, no attempt
    used, and what the task must do, with the reason given."""
    rec = record_outcome(
        running(),
        Attempt("poll", ok=False, flow=kind, reason="because"),
        Rules(),
        NOW,
        NOW,
        BACKOFF,
    )
    assert (rec.view.status, rec.view.attempts, rec.halt) == (status, 0, halt)
    assert "because" in rec.reason
    if halt:
        assert "because" in rec.task_reason


def test_a_failure_with_attempts_left_backs_off_and_on_failure_does_not_apply():
    """Given a failure on attempt 1 of 3 with on_failure=cancel, Then a retry is scheduled."""
    err = {"message": "down", "error_class": "RuntimeError", "backtrace": ""}
    rec = record_outcome(
        running(),
        Attempt("poll", ok=False, error=err),
        Rules(on_failure="cancel"),
        NOW,
        NOW,
        BACKOFF,
    )
    assert rec.view.status == "error" and rec.view.next_attempt_at is not None
    assert rec.halt is None


@pytest.mark.parametrize(
    ("on_failure", "status", "halt"),
    [("error", "error", None), ("pause", "error", "pause"), ("skip", "skipped", None),
     ("cancel", "error", "cancel")],
)  # fmt: skip
def test_on_failure_decides_what_a_step_with_no_attempt_left_does(on_failure, status, halt):
    """Given a permanent failure, Then on_failure says the step's status and the task's."""
    err = {"message": "rejected", "error_class": "PermanentError", "backtrace": ""}
    rec = record_outcome(
        running(), Attempt("poll", ok=False, error=err, permanent=True),
        Rules(on_failure=on_failure), NOW, NOW, BACKOFF,
    )  # fmt: skip
    assert (rec.view.status, rec.halt) == (status, halt)
    assert rec.view.error == err  # kept, also when skipped
    assert rec.view.processed_at == NOW


def test_success_completes_the_step():
    """Given a successful run, Then the step is complete with its results."""
    rec = record_outcome(
        running(), Attempt("poll", ok=True, results={"a": 1}), Rules(), NOW, NOW, BACKOFF
    )
    assert (rec.view.status, rec.view.results, rec.view.attempts) == ("complete", {"a": 1}, 1)


def _task() -> HandlerTask:
    row = {
        "task_id": 1, "name": "t", "version": "1", "context": {}, "tags": [], "initiator": "",
        "source_system": "", "reason": "", "requested_at": NOW,
    }  # fmt: skip
    return HandlerTask(row)


def _run(tpl: StepTemplate, cancel_if=None) -> Outcome:  # type: ignore[no-untyped-def]
    got: list[Outcome] = []
    view = replace(running(), name=tpl.name)
    run_handler(
        tpl, _task(), StepSequence({}.get, ()), HandlerStep(view), None, got.append, cancel_if
    )
    return got[0]


def test_flow_control_is_not_caught_by_except_exception():
    """Given a handler that wraps reattempt in `except Exception`, Then the run still ends
    as a reattempt request."""

    def handler(task, sequence, step):  # type: ignore[no-untyped-def]
        try:
            step.reattempt(timedelta(minutes=5))
        except Exception:
            return {"swallowed": True}
        return {"went_on": True}

    o = _run(StepTemplate(name="s", handler=handler))
    assert (o.flow, o.wait, o.results) == ("reattempt", 300.0, None)


def test_run_if_false_skips_and_cancel_if_true_cancels_and_their_errors_fail_the_attempt():
    """Given run_if False, cancel_if True, or a run_if that raises, Then skip, cancel, failure."""
    ran: list[str] = []

    def handler(task, sequence, step):  # type: ignore[no-untyped-def]
        ran.append(step.name)

    def boom(task, sequence):  # type: ignore[no-untyped-def]
        raise RuntimeError("condition down")

    assert _run(StepTemplate(name="s", handler=handler, run_if=lambda t, q: False)).flow == "skip"
    assert _run(StepTemplate(name="s", handler=handler), lambda t, q: True).flow == "cancel"
    failed = _run(StepTemplate(name="s", handler=handler, run_if=boom))
    assert failed.flow is None and not failed.ok
    assert failed.error is not None and failed.error["message"] == "condition down"
    assert ran == []


def test_flow_control_outside_a_running_handler_is_a_clear_error():
    """Given the step and task objects outside a run, Then each control call says so."""
    step, task = HandlerStep(running()), _task()
    for call in (lambda: step.reattempt(5), step.skip, task.pause, task.cancel):
        with pytest.raises(InvalidStateError, match="inside the handler"):
            call()


def test_a_bad_reattempt_wait_fails_the_attempt():
    """Given reattempt(-1), Then the run fails (InvalidStateError), it is no reattempt."""
    o = _run(StepTemplate(name="s", handler=lambda t, q, s: s.reattempt(-1)))
    assert o.flow is None and o.error is not None
    assert "negative" in o.error["message"]


@pytest.mark.parametrize(
    ("wait", "named"),
    [
        ("5m", "'5m'"),
        (None, "None"),
        (True, "True"),
        (float("inf"), "finite"),
    ],
)
def test_a_non_numeric_reattempt_wait_fails_the_attempt_naming_it(wait, named):
    """Given reattempt("5m"), reattempt(None), reattempt(True) or reattempt(inf), Then the
    run fails with InvalidStateError, it is no reattempt, and the message names reattempt,
    what a wait must be, and the value given; run_step shows the same failed run."""
    from tasker import TaskHandler
    from tasker.testing import run_step

    o = _run(StepTemplate(name="s", handler=lambda t, q, s: s.reattempt(wait)))
    assert o.flow is None and not o.ok and o.error is not None
    assert o.error["error_class"] == "tasker.errors.InvalidStateError"
    message = o.error["message"]
    assert "reattempt()" in message and "seconds or a timedelta" in message
    assert named in message

    class Poller(TaskHandler):
        name = "poller"
        step_templates = (StepTemplate(name="s", handler=lambda t, q, s: s.reattempt(wait)),)

    run = run_step(Poller, "s")
    assert (run.status, run.flow, run.wait) == ("error", None, None)
    assert run.error is not None and run.error["message"] == message


def test_flow_request_derives_from_base_exception_only():
    assert issubclass(flow.FlowRequest, BaseException)
    assert not issubclass(flow.FlowRequest, Exception)
