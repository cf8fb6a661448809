"""A step's stored `inputs` are what its handler sees as `step.inputs` (issue 8, defect 13).

NULL (the default) means the task's context, as API.md says. A person may change the
inputs of a step that has not completed (API.md part three, `PATCH .../steps/{name}`):
the next attempt sees the new value. The change is made here as a steering call makes
it: in one transaction that bumps the task's revision.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from integration_support import check_history, settle, task_class

from tasker import StepTemplate, Tasker, TaskRequest
from tasker.store import schema as m

T, S, NS = m.tasks, m.workflow_steps, m.named_steps


def set_inputs(app: Tasker, task_id: int, step: str, inputs: Any) -> None:
    """Store a step's inputs and bump the task's revision, as a steering call does."""
    with app.db.write() as conn:
        conn.execute(
            sa.update(T)
            .where(T.c.task_id == task_id)
            .values(revision=T.c.revision + 1, tx_seq=T.c.tx_seq + 1)
        )
        step_id = conn.execute(
            sa.select(S.c.workflow_step_id)
            .join(NS, S.c.named_step_id == NS.c.named_step_id)
            .where(S.c.task_id == task_id, NS.c.name == step)
        ).scalar_one()
        conn.execute(sa.update(S).where(S.c.workflow_step_id == step_id).values(inputs=inputs))


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
