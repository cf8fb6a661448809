"""Text fields that no column can hold are refused at enqueue on both stores, storing nothing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from integration_support import task_class

from tasker import StepTemplate, TaskRequest
from tasker.errors import InvalidRequestError
from tasker.store import schema as m


@pytest.mark.parametrize(
    "fields",
    [
        {"initiator": "ops\x00"},
        {"source_system": "crm\x00"},
        {"reason": "because\x00"},
        {"tags": ["vip", "\x00"]},
        {"idempotency_key": "key\x00"},
    ],
)
def test_a_nul_in_a_text_field_is_an_invalid_request_and_stores_nothing(backend, fields) -> None:
    """Given a NUL in a text field (PostgreSQL's text cannot hold one), when the request is
    enqueued, one by one or in a batch, then it is an InvalidRequestError naming the field
    (not a driver DataError) and no task is stored."""
    app = backend
    app.register(task_class("texts", [StepTemplate(name="a", handler=lambda t, q, s: {})]))
    field = next(iter(fields))
    with pytest.raises(InvalidRequestError, match=f"{field} cannot be stored"):
        app.enqueue(TaskRequest(name="texts", **fields))
    with pytest.raises(InvalidRequestError, match=f"{field} cannot be stored"):
        app.enqueue_many([TaskRequest(name="texts"), TaskRequest(name="texts", **fields)])
    with app.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(m.tasks)).scalar_one() == 0
