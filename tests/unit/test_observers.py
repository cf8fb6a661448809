"""`Observers`: the app's fan-out to its observers (`tasker.engine.observer`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from tasker import Counts, Observer
from tasker.engine.observer import Observers
from tasker.errors import ConfigurationError


class Recorder(Observer):
    def __init__(self, tag: str, seen: list[tuple[str, object]]) -> None:
        self.tag, self.seen = tag, seen

    def on_lease_lost(self, task_id: int) -> None:
        self.seen.append((self.tag, task_id))

    def before_enqueue(self, names: Sequence[str]) -> None:
        self.seen.append((self.tag, tuple(names)))


class Broken(Observer):
    def on_lease_lost(self, task_id: int) -> None:
        raise RuntimeError("broken observer")

    def before_enqueue(self, names: Sequence[str]) -> None:
        raise RuntimeError("broken observer")


def test_with_no_observer_every_event_is_a_no_op_that_no_one_wants() -> None:
    """Given no observer, then no event is wanted and calling one does nothing."""
    obs = Observers()
    assert not obs.active
    assert not obs.wants("on_attempt_started")
    obs.on_attempt_started(1, "t", "s", 1)
    obs.before_enqueue(["t"])


def test_events_reach_the_observers_that_override_them_in_order() -> None:
    """Given two recorders and a plain Observer, when a lease is lost, then both recorders
    see it in the order they were added, and only the overridden event is wanted."""
    seen: list[tuple[str, object]] = []
    obs = Observers()
    obs.add(Recorder("a", seen))
    obs.add(Observer())
    obs.add(Recorder("b", seen))
    obs.on_lease_lost(7)
    assert seen == [("a", 7), ("b", 7)]
    assert obs.wants("on_lease_lost") and not obs.wants("on_pass_started")
    obs.before_enqueue(["t"])
    assert seen[2:] == [("a", ("t",)), ("b", ("t",))]


def test_a_failing_observer_is_logged_once_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Given a broken observer before a recorder, when events come, then the recorder sees
    every one (before_enqueue too), and each failure is logged once."""
    seen: list[tuple[str, object]] = []
    obs = Observers()
    obs.add(Broken())
    obs.add(Recorder("r", seen))
    with caplog.at_level(logging.ERROR, logger="tasker.observer"):
        obs.on_lease_lost(1)
        obs.on_lease_lost(2)
        obs.before_enqueue(["t"])
    assert seen == [("r", 1), ("r", 2), ("r", ("t",))]
    failures = [r for r in caplog.records if "Broken.on_lease_lost" in r.getMessage()]
    assert len(failures) == 1


def test_a_removed_observer_sees_nothing_more() -> None:
    """Given a recorder that is removed, when an event comes, then it does not see it."""
    seen: list[tuple[str, object]] = []
    obs = Observers()
    rec = Recorder("a", seen)
    obs.add(rec)
    obs.remove(rec)
    obs.on_lease_lost(1)
    assert seen == [] and not obs.wants("on_lease_lost")


def test_only_observers_can_be_added() -> None:
    """Given an object that is not an Observer, then adding it is refused, naming its type."""
    with pytest.raises(ConfigurationError, match="got Recorderish"):
        Observers().add(type("Recorderish", (), {})())  # type: ignore[arg-type]


def test_counts_count_the_events() -> None:
    """Given a Counts observer, when events come, then it counts each kind; a flow-control
    request ends an attempt without failing it."""
    c = Counts()
    obs = Observers()
    obs.add(c)
    obs.on_attempt_finished(1, "t", "a", True, None, 0.1, None)
    obs.on_attempt_finished(1, "t", "b", False, None, 0.1, None)
    obs.on_attempt_finished(1, "t", "c", False, "skip", 0.1, None)
    obs.on_sweeper_resend(3, 2)
    obs.on_messages_sent(4)
    obs.on_lease_lost(1)
    obs.on_limit_wait("t", "a", "tax")
    assert (c.attempts, c.failures, c.resent, c.still_queued) == (3, 1, 3, 2)
    assert (c.messages, c.lease_losses, c.limit_waits) == (4, 1, 1)
