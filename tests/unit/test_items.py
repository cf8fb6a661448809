"""The pure decisions of `for_each` items (tasker.core.items)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from tasker.core import items
from tasker.core.items import Agenda, Item

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
RULES = items.Rules(retry_limit=3, retryable=True, backoff_base=1, backoff_max=60)
BOOM = {"message": "boom", "error_class": "E"}


def test_a_failed_item_is_retried_with_a_backoff_until_its_budget_is_spent():
    """Given an item failing each attempt, Then attempts 1 and 2 leave a retry due later,
    and attempt 3 (the retry limit) fails it for good."""
    item = Item(0)
    for attempt in (1, 2, 3):
        item = items.record(items.start(item), False, BOOM, None, False, RULES, NOW)
        assert item.attempts == attempt and item.status == "error"
        assert (item.next_attempt_at is None) is (attempt == 3)
        assert item.next_attempt_at is None or item.next_attempt_at > NOW
    assert item.failed_for_good


def test_a_permanent_failure_or_an_unretryable_step_fails_the_item_at_once():
    """Given a PermanentError, or a step that is not retryable, Then one attempt is all."""
    started = items.start(Item(0))
    assert items.record(started, False, BOOM, None, True, RULES, NOW).failed_for_good
    once = items.Rules(3, False, 1, 60)
    assert items.record(started, False, BOOM, None, False, once, NOW).failed_for_good


def test_items_left_running_count_as_a_lost_attempt():
    """Given items stored in progress by a runner that is gone, Then each is a failed
    attempt (worker lost) with its retry scheduled; others are untouched."""
    stored = [Item(0, "in_progress", 1), Item(1, "complete", 1), Item(2)]
    lost = items.lost(stored, RULES, NOW)
    assert [(i.index, i.status) for i in lost] == [(0, "error")]
    assert lost[0].error["error_class"].endswith("WorkerLostError")
    assert lost[0].next_attempt_at is not None


def test_the_agenda_takes_due_retries_first_then_pending_items_in_order():
    """Given pending items and a retry due now and one due later, Then a pick takes the
    due retry, then pending items in index order, within the room given."""
    stored = [
        Item(0, "complete"),
        Item(1),
        Item(2, "error", 1, BOOM, NOW),
        Item(3),
        Item(4, "error", 1, BOOM, NOW + timedelta(seconds=5)),
    ]
    agenda = Agenda(stored)
    assert agenda.take(NOW, 2) == [2, 1]
    assert agenda.take(NOW, 5) == [3]
    assert agenda.next_due() == NOW + timedelta(seconds=5)
    assert agenda.take(NOW + timedelta(seconds=5), 5) == [4]


def test_the_verdict_waits_for_retries_then_fails_for_good_or_completes():
    """Given items, Then the verdict waits while a retry is due later (even with an item
    failed for good), fails naming the items with no attempt left, else completes."""
    later = NOW + timedelta(seconds=9)
    done, dead = Item(0, "complete"), Item(1, "error", 3, BOOM, None)
    retrying = Item(2, "error", 1, BOOM, later)
    v = items.verdict({0: done, 1: dead, 2: retrying})
    assert (v.kind, v.wake_at) == ("await", later)
    v = items.verdict({0: done, 1: dead})
    assert v.kind == "failed" and v.error["items"] == [1] and "item 1: boom" in v.error["message"]
    assert items.verdict({0: done}).kind == "complete"


def test_only_a_list_of_json_values_is_an_item_list():
    """Given for_each results, Then only a list of JSON values passes."""
    assert items.check_list([1, "a", {"b": [None]}]) is None
    assert "dict" in (items.check_list({"a": 1}) or "")
    assert "not JSON" in (items.check_list([{1, 2}]) or "")


@given(st.lists(st.sampled_from(["pending", "in_progress", "complete", "error"]), max_size=50))
def test_counts_add_up_to_the_total(statuses: list[str]) -> None:
    """Given any mix of item statuses, Then complete + error + pending is the total and
    running items count as pending (not yet finished)."""
    tally = {s: statuses.count(s) for s in set(statuses)}
    c = items.counts(tally)
    assert c["total"] == len(statuses) == c["complete"] + c["error"] + c["pending"]
    assert c["pending"] == statuses.count("pending") + statuses.count("in_progress")


@given(st.lists(st.booleans(), min_size=1, max_size=30), st.integers(min_value=1, max_value=4))
def test_every_item_runs_until_it_succeeds_or_its_budget_is_spent(fails: list[bool], limit: int):
    """Given items failing (True) or not on every attempt, When run by the agenda with
    time moving past every backoff, Then each item ends complete, or failed for good after
    exactly `limit` attempts, and never runs once it completed."""
    rules = items.Rules(limit, True, 1, 60)
    states = {i: Item(i) for i in range(len(fails))}
    agenda, now = Agenda(states.values()), NOW
    for _ in range(limit * len(fails) + 1):
        picked = agenda.take(now, 4)
        for i in picked:
            assert states[i].status != "complete"
            ran = items.start(states[i])
            states[i] = items.record(ran, not fails[i], BOOM, None, False, rules, now)
            agenda.put(states[i])
        now += timedelta(seconds=120)
    for i, failing in enumerate(fails):
        s = states[i]
        assert s.status == ("error" if failing else "complete")
        assert s.attempts == (limit if failing else 1)
    assert items.verdict(states).kind == ("failed" if any(fails) else "complete")


def test_a_handler_step_starts_with_no_item_and_no_event():
    """Given a step object for any step, Then `item`, `item_index` and `event` are None
    until the engine sets them (a for_each item, an event step)."""
    from test_writes import step as step_view

    from tasker.engine.runtime import HandlerStep

    s = HandlerStep(step_view("a"))
    assert (s.item, s.item_index, s.event) == (None, None, None)


def test_flow_requests_of_an_item_use_no_attempt_and_a_reattempt_is_due_later():
    """Given an item's first attempt, Then a reattempt leaves it pending due after the
    wait (scheduled then, and the step awaits it), a skip completes it, and a pause or
    cancel leaves it pending to run again; none counts the attempt."""
    running = items.start(Item(0))
    again = items.requested(running, "reattempt", 30, NOW)
    assert (again.status, again.attempts, again.next_attempt_at) == (
        "pending",
        0,
        NOW + timedelta(seconds=30),
    )
    agenda = Agenda([again, Item(1)])
    assert agenda.take(NOW, 5) == [1]
    assert agenda.take(NOW + timedelta(seconds=30), 5) == [0]
    assert items.verdict({0: again}).wake_at == NOW + timedelta(seconds=30)
    skipped = items.requested(running, "skip", None, NOW)
    assert (skipped.status, skipped.attempts) == ("complete", 0)
    for kind in ("pause", "cancel"):
        back = items.requested(running, kind, None, NOW)
        assert (back.status, back.attempts, back.next_attempt_at) == ("pending", 0, None)
