"""What a fenced write sets on the task row, and how a refused write is explained."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tasker.core.states import Status
from tasker.errors import LeaseLostError, StaleRevisionError
from tasker.store.lease import Finish, Lease, TaskWrite, refusal

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
LEASE = Lease(task_id=7, owner="w1", epoch=3)


def write(finish=None):
    return TaskWrite(
        LEASE, revision=2, now=NOW, lease_until=NOW + timedelta(seconds=60), finish=finish
    )


def test_a_write_that_does_not_finish_renews_the_lease_and_keeps_the_schedule():
    values = write().task_values()
    assert values["status"] == "in_progress"
    assert (values["new_owner"], values["expires"]) == ("w1", NOW + timedelta(seconds=60))
    assert values["set_next"] is False
    assert write().deliver_at() is None


def test_completing_releases_the_lease_and_stamps_the_completion():
    values = write(Finish(Status.COMPLETE, None, "all steps done")).task_values()
    assert values["status"] == "complete"
    assert (values["new_owner"], values["expires"], values["next_run_at"]) == (None, None, None)
    assert (values["set_next"], values["completed_at"]) == (True, NOW)


def test_failing_for_good_releases_the_lease_without_a_completion_time():
    values = write(Finish(Status.ERROR, None, "no attempt left")).task_values()
    assert (values["status"], values["completed_at"], values["next_run_at"]) == (
        "error",
        None,
        None,
    )


def test_a_release_keeps_the_task_live_and_announces_when_it_is_due():
    wake = NOW + timedelta(seconds=30)
    w = write(Finish(None, wake, "waiting for a retry"))
    values = w.task_values()
    assert (values["status"], values["new_owner"], values["next_run_at"]) == (
        "in_progress",
        None,
        wake,
    )
    assert w.deliver_at() == wake


@pytest.mark.parametrize(
    ("current", "kind"),
    [
        ({"lease_epoch": 3, "lease_owner": "w1", "status": "in_progress"}, StaleRevisionError),
        ({"lease_epoch": 4, "lease_owner": "w2", "status": "in_progress"}, LeaseLostError),
        ({"lease_epoch": 3, "lease_owner": None, "status": "in_progress"}, LeaseLostError),
        ({"lease_epoch": 3, "lease_owner": "w1", "status": "cancelled"}, LeaseLostError),
        (None, LeaseLostError),
    ],
)
def test_a_refused_write_is_stale_only_while_the_lease_still_looks_ours(current, kind):
    assert type(refusal(write(), current)) is kind
