"""The objects handlers get: each its own copy of what it may mutate."""

from __future__ import annotations

from datetime import datetime, timezone

from tasker.core.views import StepView
from tasker.engine.runtime import HandlerStep, HandlerTask, StepSequence, json_copy

ROW = {
    "task_id": 1,
    "name": "t",
    "version": "1",
    "context": {"a": {"b": [1, {"c": 2}]}},
    "tags": ["x"],
    "initiator": "i",
    "source_system": "s",
    "reason": "r",
    "requested_at": datetime(2030, 1, 1, tzinfo=timezone.utc),
}


def view(results: object = None) -> StepView:
    return StepView(1, "s", "complete", 1, 3, True, False, (), "default", {"in": [1]},
                    results, {"message": "m"}, None, None)  # fmt: skip


def test_json_copy_shares_nothing_mutable():
    value = {"a": [1, {"b": "c"}], "n": None, "f": 1.5, "t": True}
    copied = json_copy(value)
    assert copied == value
    copied["a"][1]["b"] = "changed"
    copied["a"].append(2)
    assert value == {"a": [1, {"b": "c"}], "n": None, "f": 1.5, "t": True}


def test_each_handler_task_has_its_own_context_and_a_write_replaces_it():
    """Given two HandlerTasks of one row, when one mutates or replaces its context, then
    the other and the row keep theirs."""
    first, second = HandlerTask(ROW), HandlerTask(ROW)
    first.context["a"]["b"].append(3)
    assert second.context == {"a": {"b": [1, {"c": 2}]}}
    assert ROW["context"] == {"a": {"b": [1, {"c": 2}]}}
    second.context = {"new": 1}
    assert second.context == {"new": 1}
    assert first.context == {"a": {"b": [1, {"c": 2}, 3]}}


def test_a_handler_step_and_the_sequence_give_copies_of_inputs_results_and_error():
    """Given a step view, when a handler mutates what its HandlerStep or the sequence gives,
    then the view is unchanged and each read of the sequence starts afresh."""
    v = view({"r": [1]})
    step = HandlerStep(v)
    step.inputs["in"].append(2)
    step.results["r"].append(2)
    step.error["message"] = "changed"
    sequence = StepSequence({"s": v}.get, ("s",))
    sequence["s"].results["r"].append(3)
    assert (v.inputs, v.results, v.error) == ({"in": [1]}, {"r": [1]}, {"message": "m"})
    assert sequence["s"].results == {"r": [1]}
    step.results = {"set": True}
    assert step.results == {"set": True}
