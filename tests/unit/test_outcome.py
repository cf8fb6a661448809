"""engine.outcome: how the outcome of one attempt is described before it is stored."""

from __future__ import annotations

from tasker.engine.outcome import Outcome, describe
from tasker.errors import StepTimeoutError


def test_an_attempt_past_its_time_limit_fails_with_a_step_timeout_error():
    """Given an attempt that ran past its 0.5 s time limit,
    then its outcome is a failure recorded as a real StepTimeoutError, described as any
    raised error is: its qualified class path, its message, and its (raise-less) trace."""
    outcome = Outcome.after_time_limit("charge", token=7, limit=0.5)

    assert (outcome.name, outcome.token, outcome.ok, outcome.timed_out) == (
        "charge",
        7,
        False,
        True,
    )
    assert outcome.error == describe(StepTimeoutError("the step ran past its time limit of 0.5 s"))
    assert outcome.error["error_class"] == "tasker.errors.StepTimeoutError"
    assert (outcome.retry_after, outcome.permanent) == (None, False)


def test_describe_names_the_class_where_it_is_defined():
    """The stored class path of an error is where its class really lives."""

    class Local(Exception):
        pass

    described = describe(Local("boom"))

    assert described["message"] == "boom"
    assert described["error_class"] == f"{__name__}.{Local.__qualname__}"
    assert described["backtrace"].rstrip().endswith("Local: boom")
