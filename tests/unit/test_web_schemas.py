"""The API's models are built from the view dataclasses: every view field is declared."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import jsonschema
import pydantic
import pytest

from tasker import Tasker
from tasker.core.views import AnnotationView, StepView, TaskView, TransitionView
from tasker.web import schemas as s

#: Each view and the OpenAPI schema the API names it by.
VIEWS = {
    StepView: "StepOut",
    TaskView: "TaskOut",
    AnnotationView: "AnnotationOut",
    TransitionView: "TransitionOut",
}
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture
def openapi(tmp_path: Path) -> dict[str, Any]:
    """The OpenAPI document the served application publishes."""
    asgi = Tasker(f"sqlite:///{tmp_path}/t.db").asgi(tokens={"t": "read"})
    document: dict[str, Any] = asgi.state.openapi()
    return document


def _json_types(hint: Any) -> set[str]:
    """The JSON Schema types a field of this Python type may hold (empty: anything)."""
    if hint is Any:
        return set()
    origin = get_origin(hint)
    if origin in (Union, UnionType):
        return set().union(*(_json_types(a) for a in get_args(hint)))
    simple = {int: "integer", str: "string", bool: "boolean", datetime: "string"}
    if hint is type(None):
        return {"null"}
    if hint in simple:
        return {simple[hint]}
    if origin in (tuple, list, Sequence):
        return {"array"}
    if origin in (dict, Mapping):
        return {"object"}
    if dataclasses.is_dataclass(hint):
        return {"object"}
    raise AssertionError(f"no JSON type known for {hint!r}")


def _schema_types(prop: dict[str, Any], components: dict[str, Any]) -> set[str]:
    if "$ref" in prop:
        return _schema_types(components[prop["$ref"].rsplit("/", 1)[1]], components)
    if "anyOf" in prop:
        return set().union(*(_schema_types(p, components) for p in prop["anyOf"]))
    return {prop["type"]} if "type" in prop else set()


def test_every_view_field_is_in_the_openapi_schema_with_its_type(openapi):
    """Given the served OpenAPI document, then each field of each view (TaskView with
    parent_task_id, children, error, idempotency_key, subject; StepView with items,
    error, waiting_for ...) is a required property of its schema, of the JSON type its
    Python type says, and the schema allows no other property."""
    components = openapi["components"]["schemas"]
    for view, name in VIEWS.items():
        schema = components[name]
        hints = get_type_hints(view)
        names = [f.name for f in dataclasses.fields(view)]
        assert sorted(schema["properties"]) == sorted(names), name
        assert sorted(schema["required"]) == sorted(names), name
        assert schema["additionalProperties"] is False, name
        for field in names:
            prop = schema["properties"][field]
            assert _schema_types(prop, components) == _json_types(hints[field]), (name, field)
            if hints[field] is datetime or "datetime" in str(hints[field]):
                assert "date-time" in json.dumps(prop), (name, field)
    task = components["TaskOut"]["properties"]
    assert task["steps"]["additionalProperties"] == {"$ref": "#/components/schemas/StepOut"}
    assert task["children"]["items"] == {"type": "integer"}
    assert task["annotations"]["items"] == {"$ref": "#/components/schemas/AnnotationOut"}
    step = components["StepOut"]["properties"]
    assert "children, items, limit or paused" in step["waiting_for"]["description"]
    assert "spawned this one" in task["parent_task_id"]["description"]


def _view() -> TaskView:
    collect = StepView(
        workflow_step_id=7,
        name="collect",
        status="in_progress",
        attempts=1,
        retry_limit=3,
        retryable=True,
        skippable=False,
        depends_on=("start",),
        dependent_system="shop",
        inputs={"skus": ["a", "b"]},
        results=None,
        error={"message": "item 1 failed", "error_class": "tasker.errors.ItemError"},
        last_attempted_at=NOW,
        next_attempt_at=None,
        awaiting="items",
        waiting_for="items",
        items={"total": 3, "complete": 1, "error": 1, "pending": 1},
    )
    return TaskView(
        task_id=5,
        name="orders",
        version="1.0.0",
        status="error",
        context={"order": 1},
        tags=["eu"],
        initiator="me",
        source_system="test",
        reason="because",
        requested_at=NOW,
        completed_at=NOW,
        idempotency_key="order-1",
        steps={"collect": collect},
        annotations=(AnnotationView(5, "audit", {"by": "ann"}, NOW),),
        subject="order:1",
        created_at=NOW,
        parent_task_id=3,
        children=(8, 9),
        error={"message": "the task timed out"},
        deadline_at=NOW,
    )


def test_a_view_with_children_items_and_error_serialises_and_matches_the_schema(openapi):
    """Given a task view with a parent, children, a task error and a for_each step with
    item counts, an error and waiting_for, when it is made the API's JSON, then every
    field is there as given and the JSON is valid against the published TaskOut schema;
    the same JSON with a field the view has not is refused."""
    view = _view()
    out = s.TaskOut.model_validate(s.task_json(view)).model_dump(mode="json")
    assert out["parent_task_id"] == 3 and out["children"] == [8, 9]
    assert out["error"] == {"message": "the task timed out"}
    step = out["steps"]["collect"]
    assert step["items"] == {"total": 3, "complete": 1, "error": 1, "pending": 1}
    assert step["waiting_for"] == "items" and step["error"]["message"] == "item 1 failed"
    assert step["idempotency_key"] == "tasker-step-7"
    assert out["annotations"][0]["annotation"] == {"by": "ann"}
    document = {"$ref": "#/components/schemas/TaskOut", "components": openapi["components"]}
    jsonschema.Draft202012Validator(document).validate(out)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(document).validate({**out, "bogus": 1})
    with pytest.raises(pydantic.ValidationError, match="bogus"):
        s.TaskOut.model_validate({**s.task_json(view), "bogus": 1})


def test_a_field_added_to_a_view_is_in_its_model_with_nothing_else_to_change():
    """Given a view dataclass with one more field than StepView, then its model has that
    field, typed from its hint (a tuple as a list)."""

    @dataclass(frozen=True)
    class Wider(StepView):
        lanes: tuple[int, ...] = ()

    model = s.view_model(Wider, "WiderOut")
    assert "lanes" in model.model_fields
    schema = model.model_json_schema(mode="serialization")
    assert schema["properties"]["lanes"]["type"] == "array"
    assert schema["properties"]["lanes"]["items"] == {"type": "integer"}
