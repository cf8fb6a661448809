"""What a task's view shows of the request that created it, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from integration_support import task_class

from tasker import StepTemplate, TaskRequest
from tasker.errors import PermanentError


def test_the_view_shows_the_steps_the_request_bypassed(backend):
    """Given a task enqueued bypassing two skippable steps (named out of order, one twice),
    then the view returned by enqueue, get_task and list_tasks all show them, sorted,
    and a task that bypassed nothing shows none."""
    steps = [StepTemplate(name=n, handler=lambda t, q, s: {}, skippable=n != "a") for n in "abc"]
    backend.register(task_class("bypass", steps))

    enqueued = backend.enqueue(TaskRequest(name="bypass", bypass_steps=["c", "b", "c"]))
    plain = backend.enqueue(TaskRequest(name="bypass"))

    assert list(enqueued.bypass_steps) == ["b", "c"]
    assert list(backend.get_task(enqueued.task_id).bypass_steps) == ["b", "c"]
    listed = {t.task_id: list(t.bypass_steps) for t in backend.list_tasks()}
    assert listed == {enqueued.task_id: ["b", "c"], plain.task_id: []}
    assert list(plain.bypass_steps) == []
    assert {n: s.status for n, s in enqueued.steps.items()} == {
        "a": "pending",
        "b": "skipped",
        "c": "skipped",
    }


def test_the_steps_of_a_task_that_ended_in_error_wait_for_nothing(backend, clock):
    """Given a task with a one-hour timeout whose steps wait for an event, for two hours,
    and after a step that fails for good, when it has timed out (in `error`), then none
    of its pending steps shows a `waiting_for` (they run only if a person retries the
    task), in `get_task` and in `list_tasks`; retried, they wait again."""

    def broken(task, sequence, step):  # type: ignore[no-untyped-def]
        raise PermanentError("no")

    def ok(task, sequence, step):  # type: ignore[no-untyped-def]
        return {}

    steps = [
        StepTemplate(name="first", handler=broken),
        StepTemplate(name="then", handler=ok, depends_on=["first"]),
        StepTemplate(name="gate", handler=ok, wait_for="go"),
        StepTemplate(name="later", handler=ok, wait=timedelta(hours=2)),
    ]
    cls = type("Ends", (task_class("ends", steps),), {"timeout": timedelta(hours=1)})
    backend.register(cls)
    t = backend.enqueue(TaskRequest(name="ends")).task_id
    backend.run_until_idle()
    waiting = {n: s.waiting_for for n, s in backend.get_task(t).steps.items()}
    assert waiting == {"first": None, "then": "dependencies", "gate": "event:go", "later": "time"}
    clock.advance(timedelta(hours=1, seconds=1))
    backend.run_until_idle()
    view = backend.get_task(t)
    assert view.status == "error"
    assert {n: (s.status, s.waiting_for) for n, s in view.steps.items()} == {
        "first": ("error", None),
        "then": ("pending", None),
        "gate": ("pending", None),
        "later": ("pending", None),
    }
    (listed,) = backend.list_tasks()
    assert [s.waiting_for for s in listed.steps.values()] == [None] * 4
    backend.retry(t)
    view = backend.get_task(t)
    assert (view.steps["then"].waiting_for, view.steps["gate"].waiting_for) == (
        "dependencies",
        "event:go",
    )


def test_get_task_reads_every_kind_of_task_as_a_read_in_a_transaction_does(backend, clock):
    """Given tasks of every shape: complete, pending, a step waiting for its retry, a
    parent with spawned children, an annotated task, a step held back by a limit and one
    waiting for an event, when each is read by `get_task` (on PostgreSQL one statement on
    a driver connection when it can be) and by a read in the caller's transaction (the
    general path), then both views are equal, and no read counts as a commit."""
    from tasker.store import queries

    def boom(task, sequence, step):  # type: ignore[no-untyped-def]
        raise RuntimeError("try again")

    def spawn(task, sequence, step):  # type: ignore[no-untyped-def]
        return {"child": step.spawn(TaskRequest(name="plain"), wait=False)}

    def note(self, task, sequence, steps):  # type: ignore[no-untyped-def]
        task.annotate("seen", {"n": len(steps)})

    def ok(task, sequence, step):  # type: ignore[no-untyped-def]
        return {"ok": True}

    backend.register(task_class("plain", [StepTemplate(name="a", handler=ok)]))
    backend.register(task_class("failing", [StepTemplate(name="a", handler=boom, retry_limit=3)]))
    backend.register(task_class("parent", [StepTemplate(name="a", handler=spawn)]))
    backend.register(task_class("noted", [StepTemplate(name="a", handler=ok)], annotate=note))
    held = StepTemplate(name="a", handler=ok, dependent_system="mail")
    backend.register(task_class("limited", [held]))
    waits = [StepTemplate(name="a", handler=ok, wait_for="go")]
    backend.register(task_class("waiting", waits))
    ids = [backend.enqueue(TaskRequest(name=n)).task_id for n in ("plain", "failing", "parent")]
    ids.append(backend.enqueue(TaskRequest(name="noted")).task_id)
    backend.run_until_idle()
    ids.append(backend.enqueue(TaskRequest(name="plain")).task_id)  # pending
    backend.limit("mail", per_second=1)  # the clock stands still: the second start waits
    ids += [backend.enqueue(TaskRequest(name="limited")).task_id for _ in range(2)]
    ids.append(backend.enqueue(TaskRequest(name="waiting")).task_id)
    backend.run_until_idle()
    commits = backend.db.commits

    views = {i: backend.get_task(i) for i in ids}

    assert backend.db.commits == commits
    with backend.db.engine.connect() as conn:
        for i in ids:
            assert views[i] == queries.get_task(backend.db, i, caller=conn), i
    assert [views[i].status for i in ids[:4]] == ["complete", "in_progress", "complete", "complete"]
    assert views[ids[1]].steps["a"].waiting_for == "time"
    assert views[ids[2]].children and views[ids[3]].annotations
    limited = {views[i].steps["a"].waiting_for for i in ids[5:7]}
    assert limited == {None, "limit"}
    assert views[ids[7]].steps["a"].waiting_for == "event:go"
