"""Flow control and annotations from a `for_each` item's handler, on SQLite and
PostgreSQL: `step.reattempt`/`step.skip` act on the item, `task.pause`/`task.cancel` on
the task (API.md, "Flow control from inside a handler"), none a failed attempt."""

from __future__ import annotations

import threading
from typing import Any

from integration_support import task_class

from tasker import StepTemplate, TaskRequest


def _each_task(app: Any, handler: Any, n: int = 4, concurrency: int = 1) -> None:
    app.register(
        task_class(
            "each",
            [
                StepTemplate(
                    name="items",
                    handler=handler,
                    for_each=lambda t, s: list(range(n)),
                    concurrency=concurrency,
                    retry_limit=1,
                ),
                StepTemplate(name="after", handler=lambda t, q, s: {}, depends_on=["items"]),
            ],
        )
    )


def test_an_item_reattempt_runs_that_item_again_later_using_no_attempt(backend, clock):
    """Given item 1 asking to be reattempted in an hour on its first run (retry_limit 1),
    when run, then the other items complete and the step awaits "items" until the hour
    passed; then item 1 runs again and the step completes, no attempt used up."""
    runs: list[int] = []
    lock = threading.Lock()

    def handler(task, sequence, step):  # type: ignore[no-untyped-def]
        with lock:
            runs.append(step.item_index)
        if step.item_index == 1 and runs.count(1) == 1:
            step.reattempt(3600)
        return {"i": step.item, "attempt": step.attempts}

    _each_task(backend, handler)
    t = backend.enqueue(TaskRequest(name="each")).task_id
    backend.run_until_idle()
    step = backend.get_task(t).steps["items"]
    assert (step.status, step.waiting_for) == ("in_progress", "items")
    assert step.items == {"total": 4, "complete": 3, "error": 0, "pending": 1}
    clock.advance(3601)
    backend.run_until_idle()
    view = backend.get_task(t)
    assert view.status == "complete"
    assert view.steps["items"].results == {"items": [{"i": i, "attempt": 1} for i in range(4)]}
    assert sorted(runs) == [0, 1, 1, 2, 3]


def test_an_item_skip_finishes_that_item_without_results(backend):
    """Given item 2 calling step.skip(), when run, then the step completes with None
    in item 2's place, the other items run, and no attempt failed."""

    def handler(task, sequence, step):  # type: ignore[no-untyped-def]
        if step.item_index == 2:
            step.skip("nothing to do")
        return {"i": step.item}

    _each_task(backend, handler)
    t = backend.enqueue(TaskRequest(name="each")).task_id
    backend.run_until_idle()
    view = backend.get_task(t)
    assert view.status == "complete"
    step = view.steps["items"]
    assert step.results == {"items": [{"i": 0}, {"i": 1}, None, {"i": 3}]}
    assert step.items == {"total": 4, "complete": 4, "error": 0, "pending": 0}


def test_an_item_pausing_the_task_pauses_it_and_resume_runs_the_rest(backend):
    """Given item 1 calling task.pause() on its first run (concurrency 1), when run,
    then the task is paused with the step pending, item 0 done and items 1..3 not; on
    resume items 1..3 run (item 0 not again) and the task completes."""
    runs: list[int] = []

    def handler(task, sequence, step):  # type: ignore[no-untyped-def]
        runs.append(step.item_index)
        if step.item_index == 1 and runs.count(1) == 1:
            task.pause("wait for a person")
        return {"i": step.item}

    _each_task(backend, handler)
    t = backend.enqueue(TaskRequest(name="each")).task_id
    backend.run_until_idle()
    view = backend.get_task(t)
    assert view.status == "paused"
    step = view.steps["items"]
    assert (step.status, step.attempts, step.waiting_for) == ("pending", 0, "paused")
    assert step.items == {"total": 4, "complete": 1, "error": 0, "pending": 3}
    assert runs == [0, 1]
    backend.resume(t)
    backend.run_until_idle()
    view = backend.get_task(t)
    assert view.status == "complete"
    assert view.steps["items"].results == {"items": [{"i": i} for i in range(4)]}
    assert runs == [0, 1, 1, 2, 3]


def test_an_item_cancelling_the_task_cancels_it_and_runs_no_more_items(backend):
    """Given item 1 calling task.cancel(), when run (concurrency 1), then the task and
    its unfinished steps are cancelled, and items 2 and 3 never ran."""
    runs: list[int] = []

    def handler(task, sequence, step):  # type: ignore[no-untyped-def]
        runs.append(step.item_index)
        if step.item_index == 1:
            task.cancel("not needed")
        return {}

    _each_task(backend, handler)
    t = backend.enqueue(TaskRequest(name="each")).task_id
    backend.run_until_idle()
    view = backend.get_task(t)
    assert view.status == "cancelled"
    assert (view.steps["items"].status, view.steps["after"].status) == (
        "cancelled",
        "cancelled",
    )
    assert runs == [0, 1]
    assert any("not needed" in h.reason for h in backend.history(t) if h.step is None)


def test_annotations_of_item_handlers_are_stored_with_the_task(backend):
    """Given each item's handler annotating the task, when the step completes, then
    the task holds one annotation per item."""

    def handler(task, sequence, step):  # type: ignore[no-untyped-def]
        task.annotate("item_done", {"i": step.item})
        return {}

    _each_task(backend, handler, n=5, concurrency=2)
    t = backend.enqueue(TaskRequest(name="each")).task_id
    backend.run_until_idle()
    view = backend.get_task(t)
    assert view.status == "complete"
    got = sorted(a.annotation["i"] for a in view.annotations if a.annotation_type == "item_done")
    assert got == [0, 1, 2, 3, 4]
