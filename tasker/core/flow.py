"""Flow control from inside a handler, and what the engine records for each outcome.

A handler ends its run early with `step.reattempt(wait)`, `step.skip(reason)`,
`task.pause(reason)` or `task.cancel(reason)`: each raises a `FlowRequest`, which derives
from `BaseException` so that an `except Exception:` in user code does not catch it. Such
a run is not a failed attempt: it does not count in `attempts`.

`record_outcome` decides, with no I/O, what one attempt's outcome makes of its step
(and whether the task must pause or be cancelled); the engine stores it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from tasker.core.backoff import backoff_seconds
from tasker.core.states import Status
from tasker.core.views import StepView
from tasker.errors import InvalidStateError, ReattemptLimitError, WaitTimeoutError

if TYPE_CHECKING:  # spawns builds on this module
    from tasker.core.spawns import Spawn

REATTEMPT, SKIP, PAUSE, CANCEL = "reattempt", "skip", "pause", "cancel"
#: The status each flow-control request leaves its step in.
LEAVES = {
    REATTEMPT: Status.PENDING.value,
    SKIP: Status.SKIPPED.value,
    PAUSE: Status.PENDING.value,
    CANCEL: Status.CANCELLED.value,
}
_FINISHED = frozenset({Status.COMPLETE.value, Status.SKIPPED.value, Status.RESOLVED_MANUALLY.value})


class FlowRequest(BaseException):
    """Raised by a flow-control call to end the handler's run at once.

    Attributes:
        kind: "reattempt", "skip", "pause" or "cancel".
        wait: seconds before a reattempt (None otherwise).
        reason: the reason given (recorded in the history).
    """

    def __init__(self, kind: str, wait: float | None = None, reason: str = "") -> None:
        super().__init__(kind, wait, reason)
        self.kind, self.wait, self.reason = kind, wait, reason


@dataclass(frozen=True)
class Rules:
    """What the step's template says about failing and reattempting."""

    retry_limit: int = 3
    retryable: bool = True
    max_reattempts: int | None = None
    on_failure: str = "error"
    wait_timeout: float | None = None


class AttemptOutcome(Protocol):
    """What the pure decisions read of one attempt's outcome.

    `record_outcome` reads how the run ended; `tasker.core.writes.decide` also reads
    the step's name, the sub-tasks it spawned and a decision step's labels. The engine's
    `tasker.engine.outcome.Outcome` is one; `Attempt` is one as plain values.
    """

    name: str
    ok: bool
    results: Any
    error: dict[str, Any] | None
    retry_after: float | None
    permanent: bool
    flow: str | None
    wait: float | None
    reason: str
    decision: tuple[str, ...] | None

    @property
    def spawned(self) -> Sequence[Spawn]:
        """The sub-tasks the attempt spawned."""


@dataclass
class Attempt:
    """How one run of step `name` ended, as plain values (an `AttemptOutcome`).

    The engine records one itself for a step its lost worker left running; tests
    describe outcomes with it.
    """

    name: str
    ok: bool = False
    results: Any = None
    error: dict[str, Any] | None = None
    retry_after: float | None = None
    permanent: bool = False
    flow: str | None = None
    wait: float | None = None
    reason: str = ""
    spawned: Sequence[Spawn] = ()
    decision: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Recorded:
    """What an outcome makes of its step.

    `halt` is None, or "pause" / "cancel": what the task must do, with `task_reason`.
    """

    view: StepView
    reason: str
    details: dict[str, Any] | None = None
    halt: str | None = None
    task_reason: str = ""


def error_of(cls: type[Exception], message: str) -> dict[str, Any]:
    """A step's stored error for a failure the engine decided (no exception, no backtrace)."""
    return {
        "message": message,
        "error_class": f"{cls.__module__}.{cls.__qualname__}",
        "backtrace": "",
    }


def record_outcome(
    v: StepView,
    a: AttemptOutcome,
    rules: Rules,
    now: datetime,
    since: datetime,
    backoff: tuple[float, float],
) -> Recorded:
    """The new state of step `v` (in progress, its attempt counted at launch) after `a`.

    Args:
        v: the step as the engine knows it.
        a: how the run ended.
        rules: the step's template rules.
        now: the app's clock.
        since: when the step's dependencies were satisfied (for `wait_timeout`).
        backoff: the app's (backoff_base, backoff_max) in seconds.
    """
    if a.flow is not None:
        return _flow(v, a, rules, now, since)
    if a.ok:
        new = replace(
            v,
            status=Status.COMPLETE.value,
            results=a.results,
            error=None,
            next_attempt_at=None,
            processed_at=now,
        )
        return Recorded(new, "succeeded")
    last = a.permanent or v.attempts >= (rules.retry_limit if rules.retryable else 1)
    delay = backoff_seconds(v.attempts, backoff[0], backoff[1], a.retry_after)
    err = a.error or {}
    reason = f"{err.get('error_class', 'error')}: {err.get('message', '')}"
    if last:
        return failed_for_good(v, a.error, rules, now, reason)
    new = replace(
        v,
        status=Status.ERROR.value,
        error=a.error,
        next_attempt_at=now + timedelta(seconds=delay),
        processed_at=None,
    )
    return Recorded(new, reason, a.error)


def wait_timed_out(
    v: StepView, rules: Rules, now: datetime, deadline: datetime, waiting_for: str
) -> Recorded:
    """A step still waiting (for `waiting_for`) when its `wait_timeout` passed at `deadline`.

    It fails for good with `WaitTimeoutError`, using no attempt; `on_failure` applies.
    """
    msg = (
        f"step {v.name!r} still waited for {waiting_for} when its wait_timeout of "
        f"{rules.wait_timeout:g} s ended at {deadline.isoformat()}"
    )
    return failed_for_good(
        v, error_of(WaitTimeoutError, msg), rules, now, f"WaitTimeoutError: {msg}"
    )


def failed_for_good(
    v: StepView, error: dict[str, Any] | None, rules: Rules, now: datetime, reason: str
) -> Recorded:
    """A step with no attempt left: `on_failure` says what follows."""
    if rules.on_failure == SKIP:
        new = replace(
            v, status=Status.SKIPPED.value, results=None, error=error, next_attempt_at=None,
            processed_at=now,
        )  # fmt: skip
        return Recorded(new, f"{reason} (on_failure=skip)", error)
    new = replace(v, status=Status.ERROR.value, error=error, next_attempt_at=None, processed_at=now)
    if rules.on_failure in (PAUSE, CANCEL):
        why = f"step {v.name!r} failed for good (on_failure={rules.on_failure}): {reason}"
        return Recorded(new, reason, error, halt=rules.on_failure, task_reason=why)
    return Recorded(new, reason, error)


def _flow(v: StepView, a: AttemptOutcome, rules: Rules, now: datetime, since: datetime) -> Recorded:
    """A run that ended with a flow-control request: not a failed attempt."""
    uncounted = replace(v, attempts=max(v.attempts - 1, 0))
    said = f": {a.reason}" if a.reason else ""
    if a.flow == REATTEMPT:
        wait = a.wait or 0.0
        due = now + timedelta(seconds=wait)
        if rules.max_reattempts is not None and v.reattempts >= rules.max_reattempts:
            msg = (
                f"step {v.name!r} asked for reattempt {v.reattempts + 1} but max_reattempts "
                f"is {rules.max_reattempts}"
            )
            err = error_of(ReattemptLimitError, msg)
            return failed_for_good(v, err, rules, now, f"ReattemptLimitError: {msg}")
        if rules.wait_timeout is not None:
            deadline = since + timedelta(seconds=rules.wait_timeout)
            if due >= deadline:
                msg = (
                    f"step {v.name!r} still asked to be reattempted (in {wait:g} s) but its "
                    f"wait_timeout of {rules.wait_timeout:g} s ends at {deadline.isoformat()}"
                )
                err = error_of(WaitTimeoutError, msg)
                return failed_for_good(v, err, rules, now, f"WaitTimeoutError: {msg}")
        new = replace(
            uncounted,
            status=Status.PENDING.value,
            next_attempt_at=due,
            reattempts=v.reattempts + 1,
            processed_at=None,
        )
        return Recorded(new, f"reattempt requested: again in {wait:g} s{said}")
    if a.flow == SKIP:
        new = replace(
            uncounted, status=Status.SKIPPED.value, results=None, error=None,
            next_attempt_at=None, processed_at=now,
        )  # fmt: skip
        return Recorded(new, f"skip requested{said}")
    if a.flow == PAUSE:
        new = replace(uncounted, status=Status.PENDING.value, next_attempt_at=None)
        why = f"pause requested by step {v.name!r}{said}"
        return Recorded(new, why, halt=PAUSE, task_reason=why)
    new = replace(uncounted, status=Status.CANCELLED.value, next_attempt_at=None)
    why = f"cancel requested by step {v.name!r}{said}"
    return Recorded(new, why, halt=CANCEL, task_reason=why)


def unfinished(v: StepView) -> bool:
    """The step has not finished: cancelling its task cancels it."""
    return v.status not in _FINISHED and v.status != Status.CANCELLED.value


class FlowControl:
    """The flow-control calls of the objects a handler receives (`step`, `task`).

    They work only while the handler runs (the engine marks the run); elsewhere they
    raise `InvalidStateError`.
    """

    _in_run: bool = False

    def _request(self, kind: str, wait: float | None = None, reason: str = "") -> FlowRequest:
        if not self._in_run:
            raise InvalidStateError(
                f"{kind}() ends a step handler's run: call it from inside the handler "
                "while it runs (not after it returned, nor from update_annotations)"
            )
        if not isinstance(reason, str):
            raise InvalidStateError(f"{kind}(): reason must be a string, got {reason!r}")
        return FlowRequest(kind, wait, reason)
