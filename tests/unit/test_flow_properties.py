"""Properties of waits and flow control (hypothesis): no step starts before its due time,
and reattempts, skips, pauses and cancels never use the retry budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tasker.core import flow
from tasker.core.flow import Attempt, Rules, record_outcome
from tasker.core.planner import StepState, plan
from tasker.core.states import Status
from tasker.core.views import StepView

NOW = datetime(2026, 6, 1, tzinfo=UTC)
NAMES = ["a", "b", "c", "d", "e"]

offsets = st.one_of(st.none(), st.integers(min_value=-3600, max_value=3600))
statuses = st.sampled_from([Status.PENDING, Status.ERROR, Status.COMPLETE, Status.SKIPPED])


@st.composite
def dags(draw: st.DrawFn) -> dict[str, StepState]:
    steps = {}
    for i, name in enumerate(NAMES):
        deps = tuple(draw(st.lists(st.sampled_from(NAMES[:i]), unique=True))) if i else ()
        offset = draw(offsets)
        due = None if offset is None else NOW + timedelta(seconds=offset)
        steps[name] = StepState(name, draw(statuses), due, deps)
    return steps


@given(dags())
def test_no_step_is_started_before_its_due_time(steps):
    """Given any task's steps with due times, Then the planner starts none before it, and a
    task that only waits wakes at the earliest due time, never in the past."""
    decision = plan(steps, NOW)
    for name in decision.ready:
        due = steps[name].next_attempt_at
        assert due is None or due <= NOW
    if decision.verdict.value == "wait":
        assert decision.wake_at is not None
        assert decision.wake_at > NOW
        assert decision.wake_at == min(
            s.next_attempt_at
            for s in steps.values()
            if s.next_attempt_at is not None
            and s.status in (Status.PENDING, Status.ERROR)
            and all(steps[d].status in (Status.COMPLETE, Status.SKIPPED) for d in s.depends_on)
        )


@given(
    attempts=st.integers(1, 5),
    reattempts=st.integers(0, 5),
    kind=st.sampled_from([flow.REATTEMPT, flow.SKIP, flow.PAUSE, flow.CANCEL]),
    wait=st.floats(0, 86400),
    max_reattempts=st.one_of(st.none(), st.integers(0, 5)),
)
def test_flow_requests_never_use_the_retry_budget(attempts, reattempts, kind, wait, max_reattempts):
    """Given any flow request on a launched step, Then the launch is not counted (unless the
    request itself fails the step for good), and reattempts grow by one per granted one."""
    v = StepView(
        1, "s", "in_progress", attempts, 5, True, False, (), "default", None, None, None, NOW,
        None, None, reattempts,
    )  # fmt: skip
    rec = record_outcome(
        v, Attempt("s", ok=False, flow=kind, wait=wait), Rules(max_reattempts=max_reattempts),
        NOW, NOW, (1.0, 60.0),
    )  # fmt: skip
    new = rec.view
    if new.status == Status.ERROR.value:  # only a reattempt past max_reattempts
        assert kind == flow.REATTEMPT and max_reattempts is not None
        assert reattempts >= max_reattempts
        assert new.next_attempt_at is None
        return
    assert new.attempts == attempts - 1
    assert new.status == flow.LEAVES[kind]
    if kind == flow.REATTEMPT:
        assert new.reattempts == reattempts + 1
        assert new.next_attempt_at == NOW + timedelta(seconds=wait)
    else:
        assert new.reattempts == reattempts
