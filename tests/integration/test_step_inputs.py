"""A step's stored `inputs` are what its handler sees as `step.inputs` (issue 8, defect 13).

NULL (the default) means the task's context, as API.md says. A person may change the
inputs of a step that has not completed (`app.update_step`, behind API.md part three's
`PATCH .../steps/{name}`): the next attempt sees the new value.
"""

from __future__ import annotations

from typing import Any

from integration_support import check_history, settle, task_class

from tasker import StepTemplate, Tasker, TaskRequest
from tasker.errors import RetryableError


def set_inputs(app: Tasker, task_id: int, step: str, inputs: Any) -> None:
    """Change a step's inputs by the steering call (`PATCH .../steps/{name}`)."""
    app.update_step(task_id, step, inputs=inputs)


def recording(seen: dict[str, list[Any]]):
    def handle(task, sequence, step):
        seen.setdefault(step.name, []).append(dict(step.inputs))
        step.inputs["touched"] = True  # the handler's own copy: stored inputs stay as they are
        return {"ok": True}

    return handle


def test_stored_inputs_reach_the_handler_and_the_default_is_the_context(backend):
    """Given a task whose step b has stored inputs and whose step a has none, when it runs,
    then a sees the task's context and b its own inputs; the views show the same, and what
    a handler does to its `step.inputs` changes neither the stored inputs nor the context."""
    seen: dict[str, list[Any]] = {}
    backend.register(
        task_class(
            "inputs",
            [
                StepTemplate(name="a", handler=recording(seen)),
                StepTemplate(name="b", handler=recording(seen), depends_on=["a"]),
            ],
        )
    )
    task = backend.enqueue(TaskRequest(name="inputs", context={"order": 7}))
    set_inputs(backend, task.task_id, "b", {"sku": "X-1", "qty": 2})

    backend.run_until_idle()

    done = backend.get_task(task.task_id)
    assert done.status == "complete"
    assert seen == {"a": [{"order": 7}], "b": [{"sku": "X-1", "qty": 2}]}
    assert done.context == {"order": 7}
    assert done.steps["a"].inputs == {"order": 7}
    assert done.steps["b"].inputs == {"sku": "X-1", "qty": 2}
    check_history(backend, task.task_id)


def test_inputs_changed_after_a_failed_attempt_are_what_the_next_attempt_sees(backend, clock):
    """Given a step whose first attempt failed on its inputs, when a person changes them
    before the retry, then the second attempt sees the new inputs and the task completes."""
    seen: list[Any] = []

    def charge(task, sequence, step):
        seen.append(dict(step.inputs))
        if step.inputs.get("card") != "valid":
            raise RuntimeError(f"card {step.inputs.get('card')!r} declined")
        return {"charged": True}

    backend.register(task_class("charge", [StepTemplate(name="charge", handler=charge)]))
    task = backend.enqueue(TaskRequest(name="charge", context={"card": "expired"}))
    backend.run_until_idle()
    failed = backend.get_task(task.task_id).steps["charge"]
    assert (failed.status, failed.attempts) == ("error", 1)
    assert failed.next_attempt_at is not None

    set_inputs(backend, task.task_id, "charge", {"card": "valid"})
    done = settle(backend, clock, task.task_id)

    assert done.status == "complete"
    assert seen == [{"card": "expired"}, {"card": "valid"}]
    assert done.steps["charge"].inputs == {"card": "valid"}
    check_history(backend, task.task_id)


def test_inputs_changed_while_the_task_runs_reach_a_step_started_later(backend):
    """Given a -> b, when the inputs of b change while a runs (the pass holds the task),
    then the pass's next write is refused for its stale revision, it reads the steps again,
    and b starts with the new inputs."""
    seen: dict[str, list[Any]] = {}

    def a(task, sequence, step):
        set_inputs(backend, task.task_id, "b", {"changed": "during a"})
        return {"ok": True}

    backend.register(
        task_class(
            "midway",
            [
                StepTemplate(name="a", handler=a),
                StepTemplate(name="b", handler=recording(seen), depends_on=["a"]),
            ],
        )
    )
    task = backend.enqueue(TaskRequest(name="midway", context={"first": True}))

    backend.run_until_idle()

    done = backend.get_task(task.task_id)
    assert done.status == "complete"
    assert seen == {"b": [{"changed": "during a"}]}
    check_history(backend, task.task_id)


def test_update_annotations_sees_the_inputs_the_handlers_saw(backend):
    """Given a step with stored inputs and one without, when update_annotations is called
    with them, then each step's `inputs` is what its handler saw (stored, else the context)."""
    noted: dict[str, Any] = {}

    def annotate(self, task, sequence, steps):
        for s in steps:
            noted[s.name] = s.inputs

    backend.register(
        task_class(
            "noted",
            [
                StepTemplate(name="a", handler=lambda task, sequence, step: {"ok": True}),
                StepTemplate(
                    name="b", handler=lambda task, sequence, step: {"ok": True}, depends_on=["a"]
                ),
            ],
            annotate=annotate,
        )
    )
    task = backend.enqueue(TaskRequest(name="noted", context={"order": 1}))
    set_inputs(backend, task.task_id, "b", {"own": True})

    backend.run_until_idle()

    assert backend.get_task(task.task_id).status == "complete"
    assert noted == {"a": {"order": 1}, "b": {"own": True}}


def test_inputs_changed_during_an_attempt_reach_its_retry_in_the_same_pass(backend):
    """Given a step that, while its first attempt runs, gets new inputs and then fails with
    an immediate retry, when the same pass starts the retry, then the retry sees the new
    inputs (the pass re-reads what steering changed, even of a step it was running)."""
    seen: list[Any] = []

    def flaky(task, sequence, step):
        seen.append(dict(step.inputs))
        if step.attempts == 1:
            set_inputs(backend, task.task_id, "flaky", {"fixed": True})
            raise RetryableError("try again with the new inputs", retry_after=0)
        return {"ok": True}

    backend.register(task_class("fixup", [StepTemplate(name="flaky", handler=flaky)]))
    task = backend.enqueue(TaskRequest(name="fixup", context={"fixed": False}))

    backend.run_until_idle()

    done = backend.get_task(task.task_id)
    assert done.status == "complete"
    assert seen == [{"fixed": False}, {"fixed": True}]
    check_history(backend, task.task_id)
