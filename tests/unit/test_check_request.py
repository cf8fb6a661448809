"""enqueue.check_request: validating a TaskRequest against its handler, before any I/O."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa

from tasker import StepTemplate, TaskHandler, TaskRequest
from tasker.control.enqueue import KEY_CONSTRAINT, check_request, request_digest
from tasker.definition.registry import compile_handler
from tasker.errors import ContextValidationError, InvalidRequestError
from tasker.store import schema as m


def noop(task, sequence, step):
    return {}


class Orders(TaskHandler):
    name = "orders"
    version = "2.0.0"
    context_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["order_id", "lines"],
        "properties": {
            "order_id": {"type": "integer"},
            "lines": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["sku"],
                    "properties": {"qty": {"minimum": 1}},
                },
            },
            "note": {"type": "string", "maxLength": 5},
        },
        "additionalProperties": False,
    }
    step_templates = (
        StepTemplate(name="validate", handler=noop),
        StepTemplate(name="gift_wrap", handler=noop, skippable=True),
        StepTemplate(name="survey", handler=noop, skippable=True),
        StepTemplate(name="ship", handler=noop, depends_on=["validate", "gift_wrap"]),
    )


REG = compile_handler(Orders)
GOOD = {"order_id": 7, "lines": [{"sku": "A", "qty": 1}]}


def request(**kwargs):
    return TaskRequest(name="orders", **{"context": GOOD, **kwargs})


def test_a_valid_request_gives_the_values_to_store():
    values = check_request(REG, request(tags=["vip"], bypass_steps=["survey", "gift_wrap"]))
    assert values["context"] == GOOD
    assert values["tags"] == ["vip"]
    assert values["bypass_steps"] == ["gift_wrap", "survey"]
    assert (values["initiator"], values["source_system"], values["reason"]) == ("unknown",) * 3
    assert values["idempotency_key"] is None
    assert "request_digest" not in values


def test_every_schema_violation_is_listed_each_with_its_path():
    bad = {"order_id": "7", "lines": [{"qty": 0}, {"sku": "B"}], "note": "far too long", "x": 1}
    with pytest.raises(ContextValidationError) as info:
        check_request(REG, request(context=bad))
    errors = info.value.errors
    assert len(errors) == 5, errors
    paths = sorted(e.split(":")[0] for e in errors)
    assert paths == ["$", "$.lines[0]", "$.lines[0].qty", "$.note", "$.order_id"]
    assert isinstance(info.value, InvalidRequestError)
    assert "(5)" in str(info.value)


def test_a_missing_required_key_is_one_violation_per_key():
    with pytest.raises(ContextValidationError) as info:
        check_request(REG, request(context={}))
    assert len(info.value.errors) == 2


@pytest.mark.parametrize(
    ("bypass", "fragment"),
    [(["ghost"], "unknown step"), (["validate"], "not skippable"), (["survey", "ship"], "ship")],
)
def test_bypass_steps_must_name_existing_skippable_steps(bypass, fragment):
    with pytest.raises(InvalidRequestError, match=fragment):
        check_request(REG, request(bypass_steps=bypass))


def test_a_context_that_is_not_a_dict_is_rejected():
    with pytest.raises(InvalidRequestError, match="context must be a dict"):
        check_request(REG, request(context=[GOOD]))


def test_a_context_that_cannot_be_stored_as_json_is_rejected_before_the_schema():
    with pytest.raises(InvalidRequestError, match=r"\$\.lines\[0\]\.qty") as info:
        check_request(REG, request(context={"order_id": 1, "lines": [{"qty": float("nan")}]}))
    assert not isinstance(info.value, ContextValidationError)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"tags": "vip"}, "tags"),
        ({"tags": ["vip", 3]}, "tags"),
        ({"bypass_steps": "survey"}, "bypass_steps"),
        ({"initiator": 5}, "initiator"),
        ({"source_system": "x" * 256}, "source_system"),
        ({"reason": None}, "reason"),
        ({"idempotency_key": "k" * 256}, "idempotency_key"),
        ({"idempotency_key": 42}, "idempotency_key"),
        ({"requested_at": "2024-01-01"}, "requested_at"),
        ({"initiator": "a\x00b"}, "initiator cannot be stored.*U\\+0000"),
        ({"source_system": "s\x00"}, "source_system cannot be stored"),
        ({"reason": "why \ud800"}, "reason cannot be stored.*U\\+D800"),
        ({"tags": ["ok", "n\x00"]}, "tags cannot be stored"),
        ({"idempotency_key": "k\x00"}, "idempotency_key cannot be stored"),
    ],
)
def test_every_other_field_is_checked(kwargs, fragment):
    with pytest.raises(InvalidRequestError, match=fragment):
        check_request(REG, request(**kwargs))


def test_limits_are_inclusive():
    values = check_request(REG, request(reason="r" * 255, idempotency_key="k" * 255))
    assert len(values["reason"]) == 255


def test_the_digest_identifies_the_request_whatever_the_key_order_and_bypass_order():
    one = check_request(
        REG,
        request(
            context={"order_id": 1, "lines": []},
            bypass_steps=["survey", "gift_wrap"],
            idempotency_key="k",
        ),
    )
    two = check_request(
        REG,
        request(
            context={"lines": [], "order_id": 1},
            bypass_steps=["gift_wrap", "survey"],
            idempotency_key="k",
            requested_at=datetime(2020, 1, 1, tzinfo=timezone.utc),
        ),
    )
    assert one["request_digest"] == two["request_digest"]
    assert len(one["request_digest"]) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"context": {"order_id": 2, "lines": []}},
        {"tags": ["b", "a"]},
        {"initiator": "api"},
        {"source_system": "crm"},
        {"reason": "again"},
        {"bypass_steps": ["survey"]},
    ],
)
def test_the_digest_changes_with_any_part_of_the_request(change):
    base = {"context": {"order_id": 1, "lines": []}, "tags": ["a", "b"], "idempotency_key": "k"}
    first = check_request(REG, request(**base))
    second = check_request(REG, request(**{**base, **change}))
    assert first["request_digest"] != second["request_digest"]


def test_the_digest_keeps_the_version_as_the_caller_gave_it():
    """Given the same request without a version and naming the newest version,
    then their digests differ: None (the newest, whichever it is then) stays None."""
    without = check_request(REG, request(idempotency_key="k"))
    named = check_request(REG, request(version="2.0.0", idempotency_key="k"))
    assert without["request_digest"] == request_digest("orders", None, without)
    assert named["request_digest"] == request_digest("orders", "2.0.0", named)
    assert without["request_digest"] != named["request_digest"]


def test_the_key_constraint_enqueue_recognises_is_the_schemas():
    """The constraint name `is_key_taken` looks for is the one the schema declares."""
    (unique,) = [
        c
        for c in m.tasks.constraints
        if isinstance(c, sa.UniqueConstraint) and [x.name for x in c.columns] == ["idempotency_key"]
    ]
    assert unique.name == KEY_CONSTRAINT
