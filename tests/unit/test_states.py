"""The state machine of tasks and steps: every transition allowed or forbidden, per table."""

from __future__ import annotations

import itertools

import pytest

from tasker.core.states import (
    SATISFIED,
    STEP_TRANSITIONS,
    TASK_FINAL,
    TASK_LIVE,
    TASK_TRANSITIONS,
    Status,
    can_step,
    can_task,
    check_step,
    check_task,
    is_note,
)
from tasker.errors import InvalidTransitionError

P, R, C, E, X, M, S, Z = (
    Status.PENDING,
    Status.IN_PROGRESS,
    Status.COMPLETE,
    Status.ERROR,
    Status.CANCELLED,
    Status.RESOLVED_MANUALLY,
    Status.SKIPPED,
    Status.PAUSED,
)

# The specification, written out independently of tasker.core.states.
STEP_ALLOWED = {
    None: {P, S},  # created pending, or skipped by bypass_steps
    # error: still waiting for its event past its wait_timeout; skipped: a branch not taken
    P: {R, X, M, S, E},
    # error also covers "worker lost" and "timed out"; pending: a reattempt or a pause;
    # skipped: step.skip(), run_if false, on_failure="skip"; in_progress: the handler
    # returned and the step now awaits its children or items
    R: {C, E, X, P, S, R},
    E: {R, P, X, M, S},  # retry attempt, retry() with a fresh budget, cancel, resolve, skip
    C: set(),
    S: set(),
    M: set(),
    X: set(),
}
TASK_ALLOWED = {
    None: {P},
    P: {R, X, M},  # claimed, cancelled, or resolved by hand (resolve_task) before it ran
    R: {C, E, X, Z},  # not resolved by hand while the engine works on it; paused
    E: {R, X, M},  # resumed by resolve_step/retry, cancelled, resolved by hand (resolve_task)
    Z: {R, X, M, E},  # resumed (resume, retry, resolve_step), cancelled, resolved, timed out
    C: set(),
    X: set(),
    M: set(),
}
TASK_STATUSES = [s for s in Status if s is not S]
STEP_STATUSES = [s for s in Status if s is not Z]


@pytest.mark.parametrize(
    ("before", "after"), list(itertools.product([None, *STEP_STATUSES], list(Status)))
)
def test_every_step_transition_is_allowed_or_forbidden_as_specified(before, after):
    """Given any (from, to) pair of step statuses, the state machine answers as the spec."""
    expected = after in STEP_ALLOWED[before]
    assert can_step(before, after) is expected
    if expected:
        check_step("charge", before, after)
    else:
        with pytest.raises(InvalidTransitionError, match=r"'charge'"):
            check_step("charge", before, after)


@pytest.mark.parametrize(
    ("before", "after"), list(itertools.product([None, *TASK_STATUSES], list(Status)))
)
def test_every_task_transition_is_allowed_or_forbidden_as_specified(before, after):
    """Given any (from, to) pair of task statuses, the state machine answers as the spec."""
    expected = after in TASK_ALLOWED[before]
    assert can_task(before, after) is expected
    if expected:
        check_task(7, before, after)
    else:
        with pytest.raises(InvalidTransitionError, match=r"task 7"):
            check_task(7, before, after)


def test_the_tables_name_exactly_the_specified_states():
    assert set(STEP_TRANSITIONS) == set(STEP_ALLOWED)
    assert set(TASK_TRANSITIONS) == set(TASK_ALLOWED)


@pytest.mark.parametrize("final", [C, S, M, X])
def test_a_final_step_state_has_no_exit(final):
    assert not any(can_step(final, to) for to in Status)


@pytest.mark.parametrize("final", sorted(TASK_FINAL))
def test_a_final_task_state_has_no_exit(final):
    assert not any(can_task(final, to) for to in Status)


def test_a_task_in_error_is_not_final_it_can_resume():
    assert E not in TASK_FINAL
    assert can_task(E, R)


def test_a_task_is_never_skipped():
    assert not any(can_task(frm, S) for frm in [None, *TASK_STATUSES])


def test_a_same_status_task_row_is_a_note_and_no_other_row_is():
    """Given the history rows of a task, Then only one that keeps the status is a note."""
    assert is_note(C, C) and is_note(E, E)
    assert not is_note(None, P) and not is_note(R, C)


def test_a_step_is_never_paused_only_its_task():
    assert not any(can_step(frm, Z) for frm in [None, *STEP_STATUSES])


def test_a_paused_task_is_neither_live_nor_final_and_can_go_on_or_be_cancelled():
    assert Z not in TASK_LIVE and Z not in TASK_FINAL
    assert can_task(Z, R) and can_task(Z, X)
    assert can_task(R, Z) and not can_task(P, Z)


def test_only_complete_resolved_and_skipped_steps_satisfy_their_dependents():
    assert frozenset({C, M, S}) == SATISFIED


def test_live_tasks_are_pending_or_in_progress_and_none_of_them_is_final():
    assert frozenset({P, R}) == TASK_LIVE
    assert not TASK_LIVE & TASK_FINAL


@pytest.mark.parametrize(
    ("table", "start"), [(STEP_TRANSITIONS, None), (TASK_TRANSITIONS, None)], ids=["step", "task"]
)
def test_every_state_of_a_table_is_reachable_from_creation(table, start):
    seen, frontier = {start}, [start]
    while frontier:
        for nxt in table[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(table)


def test_status_is_a_string_enum_that_prints_its_value():
    assert str(Status.RESOLVED_MANUALLY) == "resolved_manually"
    assert Status("in_progress") is R
    assert R == "in_progress"


def test_resolving_a_task_by_hand_resolves_exactly_the_steps_it_may_have_unfinished():
    """resolve_task moves a pending, failed or paused task to resolved_manually and its pending
    and failed steps with it; a task or step in progress is never resolved by hand."""
    assert {f for f in TASK_STATUSES if can_task(f, M)} == {P, E, Z}
    assert {f for f in Status if can_step(f, M)} == {P, E}
