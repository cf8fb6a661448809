"""`tasker.testing.run_step`: one step of a task handler, run alone with no database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tasker import StepTemplate, TaskHandler
from tasker.errors import PermanentError, TaskerError
from tasker.testing import run_step


def load(task, sequence, step):
    raise AssertionError("run_step must not run the other steps")


def total(task, sequence, step):
    task.annotate("fee", {"fee": task.context["fee"]})
    return {"total": sequence.step("load").results["amount"] + task.context["fee"]}


def boom(task, sequence, step):
    raise PermanentError("kaput")


def mutate(task, sequence, step):
    task.context["seen"] = True
    sequence.step("load").results["amount"] = -1
    return {"attempt": step.attempts, "inputs": step.inputs}


class Billing(TaskHandler):
    name = "billing"
    step_templates = (
        StepTemplate(name="load", handler=load),
        StepTemplate(name="total", handler=total, depends_on=["load"]),
        StepTemplate(name="boom", handler=boom),
        StepTemplate(name="mutate", handler=mutate, depends_on=["load"]),
    )


def test_a_step_sees_the_given_context_and_other_steps_results() -> None:
    """Given results for `load`, when `total` runs alone, it completes from them."""
    run = run_step(Billing, "total", context={"fee": 2}, results={"load": {"amount": 10}})
    assert run.status == "complete"
    assert run.results == {"total": 12}
    assert run.error is None
    assert run.flow is None and run.decision is None and run.spawned == ()
    assert run.annotations == (("fee", {"fee": 2}),)


def test_a_failing_step_reports_its_error_and_no_results() -> None:
    """When the handler raises, the run is an error with the message and the class path."""
    run = run_step(Billing, "boom")
    assert run.status == "error"
    assert run.results is None
    assert run.error is not None
    assert run.error["message"] == "kaput"
    assert run.error["error_class"] == "tasker.errors.PermanentError"


def test_the_callers_values_are_not_changed_by_the_handler() -> None:
    """Given dicts passed in, a handler that mutates what it sees leaves them as they were."""
    context = {"fee": 1}
    results = {"load": {"amount": 10}}
    run = run_step(Billing, "mutate", context=context, results=results, attempt=3)
    assert run.results == {"attempt": 3, "inputs": {"fee": 1}}
    assert context == {"fee": 1}
    assert results == {"load": {"amount": 10}}


def test_an_unknown_step_name_is_a_tasker_error_naming_the_steps() -> None:
    """An unknown step name raises TaskerError listing the handler's steps."""
    with pytest.raises(TaskerError, match=r"no step 'nope'.*'boom'"):
        run_step(Billing, "nope")


def test_run_step_gives_a_transactional_step_the_connection_passed(tmp_path):
    # Given a transactional step and a connection of the test's own, in its transaction
    def book(task, sequence, step):
        step.connection.execute(sa.text("INSERT INTO ledger (n) VALUES (1)"))
        return {"booked": True}

    class Booking(TaskHandler):
        name = "booking"
        step_templates = [StepTemplate(name="book", handler=book, transactional=True)]  # noqa: RUF012

    engine = sa.create_engine(f"sqlite:///{tmp_path}/user.db")
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE TABLE ledger (n INTEGER)"))

        # When the step runs in isolation with it
        run = run_step(Booking, "book", connection=conn)

        # Then the handler wrote through it, and run_step left the transaction to the test
        assert run.status == "complete"
        assert conn.in_transaction()
        assert conn.execute(sa.text("SELECT count(*) FROM ledger")).scalar() == 1
        conn.rollback()

    # And without one, step.connection says how to give it
    bare = run_step(Booking, "book")
    assert bare.status == "error"
    assert "connection=" in bare.error["message"]
    # And a connection for a step that is not transactional is refused
    with pytest.raises(TaskerError, match="not transactional"):
        run_step(Billing, "total", context={"fee": 2}, results={"load": {"amount": 10}},
                 connection=object())  # fmt: skip


def test_run_step_reports_the_sub_tasks_a_step_spawned():
    """Given a step spawning two sub-tasks, When run in isolation, Then `spawned` holds
    their requests in order and the handler got distinct ids for them."""
    from tasker import TaskRequest

    ids: list[int] = []

    def fan_out(task, sequence, step):  # type: ignore[no-untyped-def]
        for region in ("eu", "us"):
            ids.append(step.spawn(TaskRequest(name="sync", context={"r": region}), key=region))

    cls = type(
        "Fan",
        (TaskHandler,),
        {"name": "fan", "step_templates": [StepTemplate(name="f", handler=fan_out)]},
    )
    run = run_step(cls, "f")
    assert run.status == "complete"
    assert [r.context for r in run.spawned] == [{"r": "eu"}, {"r": "us"}]
    assert len(set(ids)) == 2
