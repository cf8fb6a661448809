"""The error tree of `tasker.errors`: one root, and kin errors under one parent."""

from __future__ import annotations

import inspect
from datetime import datetime, timezone

import pytest

from tasker import errors


def test_every_error_tasker_defines_derives_from_the_root():
    """Every exception class in tasker.errors is a TaskerError."""
    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__
    ]
    assert classes
    assert [c.__name__ for c in classes if not issubclass(c, errors.TaskerError)] == []


@pytest.mark.parametrize("cls", [errors.TaskNotFoundError, errors.StepNotFoundError])
def test_a_task_or_step_that_does_not_exist_is_one_kind_of_invalid_request(cls):
    """Both "not found" errors share the NotFoundError parent (one 404 for an HTTP layer),
    itself an InvalidRequestError like every other bad request."""
    assert issubclass(cls, errors.NotFoundError)
    assert issubclass(cls, errors.InvalidRequestError)


def test_the_stale_revision_of_a_fenced_write_is_in_the_tree_beside_a_lost_lease():
    """StaleRevisionError lives in tasker.errors and is a TaskerError (not a bare
    Exception defined by a store), like LeaseLostError, the other refusal of a write."""
    from tasker.store import lease

    assert errors.StaleRevisionError.__module__ == "tasker.errors"
    assert issubclass(errors.StaleRevisionError, errors.TaskerError)
    assert not issubclass(errors.StaleRevisionError, errors.InvalidRequestError)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    write = lease.TaskWrite(lease.Lease(1, "w", 2), revision=0, now=now, lease_until=now)
    refused = lease.refusal(write, {"lease_epoch": 2, "lease_owner": "w", "status": "in_progress"})
    assert type(refused) is errors.StaleRevisionError
