"""Retention: `app.purge(older_than=)`, `Tasker(retention=)`, and cancel's `completed_at`."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from integration_support import task_class

from tasker import StepTemplate, TaskRequest
from tasker.cli.main import main
from tasker.control import retention
from tasker.control.sweeper import Sweeper
from tasker.errors import InvalidRequestError, PermanentError, TaskNotFoundError
from tasker.store import schema as m

DAY = 86400


def ok(task, sequence, step):
    task.annotate("audit", {"step": step.name})
    return {"ok": True}


def fails(task, sequence, step):
    raise PermanentError("no")


def register(app):
    app.register(
        task_class(
            "two",
            [
                StepTemplate(name="a", handler=ok),
                StepTemplate(name="b", handler=ok, depends_on=["a"]),
            ],
            annotate=lambda self, task, seq, steps: task.annotate("note", {"n": len(steps)}),
        )
    )
    app.register(task_class("bad", [StepTemplate(name="a", handler=fails)]))


def rows_of(app, task_ids) -> dict[str, int]:
    """How many rows of each table belong to these tasks."""
    out = {}
    with app.db.read() as conn:
        for table in (*retention.CHILD_TABLES, m.tasks):
            out[table.name] = int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(table)
                    .where(table.c.task_id.in_(task_ids))
                ).scalar_one()
            )
    return out


def test_purge_deletes_old_final_tasks_with_everything_of_theirs(backend, clock):
    """Given three tasks completed 10 days ago, one cancelled then, one in error, one
    pending and one completed now, when purging what is older than 7 days, then exactly
    the complete and cancelled old ones go, with every row of theirs, and the count says 4;
    a second purge deletes nothing."""
    register(backend)
    old = [backend.enqueue(TaskRequest(name="two", context={"i": i})).task_id for i in range(3)]
    cancelled = backend.enqueue(TaskRequest(name="two")).task_id
    backend.cancel(cancelled)
    failed = backend.enqueue(TaskRequest(name="bad")).task_id
    backend.run_until_idle()
    clock.advance(10 * DAY)
    live = backend.enqueue(TaskRequest(name="two")).task_id
    recent = backend.enqueue(TaskRequest(name="two")).task_id
    backend.run_until_idle()
    live_before = rows_of(backend, [live])
    assert rows_of(backend, old)["tasker_task_annotations"] > 0
    assert rows_of(backend, old)["tasker_workflow_step_edges"] == 3
    assert backend.get_task(failed).status == "error"

    assert backend.purge(older_than=timedelta(days=7)) == 4

    assert all(n == 0 for n in rows_of(backend, [*old, cancelled]).values())
    for task_id in (*old, cancelled):
        with pytest.raises(TaskNotFoundError):
            backend.get_task(task_id)
    assert backend.get_task(failed).status == "error"
    assert backend.get_task(recent).status == "complete"
    assert rows_of(backend, [live]) == live_before
    assert backend.purge(older_than=7 * DAY) == 0


def _events_and_items(app, task_ids) -> tuple[int, int]:
    """How many event rows and for_each item rows these tasks have (read directly, not
    through retention.CHILD_TABLES, so a table left out of it still shows)."""
    with app.db.read() as conn:
        events, items = (
            int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(table)
                    .where(table.c.task_id.in_(task_ids))
                ).scalar_one()
            )
            for table in (m.events, m.step_items)
        )
    return events, items


def test_purge_deletes_a_task_s_events_and_for_each_items_and_keeps_the_others(backend, clock):
    """Given two tasks completed 10 days ago and one completed now, each with a for_each
    step of three items and a step that consumed a signalled event (a second event of that
    name left unconsumed), When purging what is older than 7 days, Then the old tasks'
    event and item rows are gone with them, and the recent task keeps all of its rows."""
    backend.register(
        task_class(
            "collect",
            [
                StepTemplate(name="load", handler=lambda t, q, s: {"items": [1, 2, 3]}),
                StepTemplate(
                    name="each",
                    handler=lambda t, q, s: {"n": s.item},
                    depends_on=["load"],
                    for_each=lambda t, q: q.step("load").results["items"],
                ),
                StepTemplate(name="approval", depends_on=["each"], wait_for="approved"),
            ],
        )
    )

    def collected() -> int:
        task_id = backend.enqueue(TaskRequest(name="collect")).task_id
        backend.signal(task_id, "approved", {"by": "ann"})
        backend.signal(task_id, "approved", {"by": "bob"})
        return task_id

    old = [collected(), collected()]
    backend.run_until_idle()
    clock.advance(10 * DAY)
    recent = collected()
    backend.run_until_idle()
    for task_id in (*old, recent):
        view = backend.get_task(task_id)
        assert view.status == "complete"
        assert view.steps["each"].results == {"items": [{"n": 1}, {"n": 2}, {"n": 3}]}
        assert view.steps["approval"].results == {"by": "ann"}
    assert _events_and_items(backend, old) == (4, 6)
    recent_before = rows_of(backend, [recent])
    assert _events_and_items(backend, [recent]) == (2, 3)

    assert backend.purge(older_than=timedelta(days=7)) == 2

    assert _events_and_items(backend, old) == (0, 0)
    assert all(n == 0 for n in rows_of(backend, old).values())
    assert _events_and_items(backend, [recent]) == (2, 3)
    assert rows_of(backend, [recent]) == recent_before
    assert backend.get_task(recent).steps["approval"].results == {"by": "ann"}


def test_cancel_sets_completed_at_so_retention_counts_from_it(backend, clock):
    """Given a pending task, when it is cancelled, then its completed_at is that moment,
    and a purge of what is older than an hour deletes it an hour and a second later."""
    register(backend)
    task_id = backend.enqueue(TaskRequest(name="two")).task_id
    clock.advance(30)
    backend.cancel(task_id)
    assert backend.get_task(task_id).completed_at == clock()
    clock.advance(3600)
    assert backend.purge(older_than=3600) == 0
    clock.advance(1)
    assert backend.purge(older_than=3600) == 1


def test_purge_goes_in_bounded_batches(backend, clock):
    """Given five old final tasks, when purging with batches of two, then one batch
    deletes two, a bound of two batches deletes four, and an unbounded purge all."""
    register(backend)
    ids = [backend.enqueue(TaskRequest(name="two", context={"i": i})).task_id for i in range(5)]
    backend.run_until_idle()
    clock.advance(DAY)
    cutoff = clock() - timedelta(hours=1)
    assert retention.purge_batch(backend.db, cutoff, batch=2) == 2
    assert retention.purge(backend.db, cutoff, batch=1, max_batches=2) == 2
    assert retention.purge(backend.db, cutoff, batch=2) == 1
    assert rows_of(backend, ids)["tasker_tasks"] == 0


def test_retention_setting_purges_from_run_until_idle_by_the_app_clock(make_app, clock):
    """Given an app with retention of 30 days and a task completed now, when
    run_until_idle runs 29 days later the task is kept; 31 days later it is gone."""
    app = make_app(retention=timedelta(days=30))
    assert app.settings.retention == 30 * DAY
    register(app)
    task_id = app.enqueue(TaskRequest(name="two")).task_id
    app.run_until_idle()
    clock.advance(29 * DAY)
    app.run_until_idle()
    assert app.get_task(task_id).status == "complete"
    clock.advance(2 * DAY)
    app.run_until_idle()
    with pytest.raises(TaskNotFoundError):
        app.get_task(task_id)


def test_without_retention_nothing_is_purged(backend, clock):
    """Given the default settings (keep everything), a task completed long ago stays."""
    register(backend)
    task_id = backend.enqueue(TaskRequest(name="two")).task_id
    backend.run_until_idle()
    clock.advance(3650 * DAY)
    backend.run_until_idle()
    assert backend.get_task(task_id).status == "complete"


@pytest.mark.parametrize("older_than", [-1, "30d", None, True])
def test_purge_with_a_bad_age_is_refused(backend, older_than):
    """Given an age that is not a non-negative duration, purge raises InvalidRequestError."""
    with pytest.raises(InvalidRequestError, match="older_than"):
        backend.purge(older_than=older_than)


def test_the_purge_command_purges_what_is_older(backend, clock, capsys):
    """Given a task completed two days ago, `tasker purge --older-than 1d` deletes it and
    says so; a duration that does not parse is refused with exit code 2."""
    register(backend)
    task_id = backend.enqueue(TaskRequest(name="two")).task_id
    backend.run_until_idle()
    url = backend.db.engine.url.render_as_string(hide_password=False)
    # The command's app reads the real clock; the fake clock started at the real now.
    assert main(["purge", "--older-than", "30d", "--database-url", url]) == 0
    assert "purged 0 task(s)" in capsys.readouterr().out
    with backend.db.write() as conn:
        conn.execute(
            sa.update(m.tasks)
            .where(m.tasks.c.task_id == task_id)
            .values(completed_at=datetime.now(timezone.utc) - timedelta(days=2))
        )
    assert main(["purge", "--older-than", "1d", "--database-url", url]) == 0
    assert "purged 1 task(s)" in capsys.readouterr().out
    with pytest.raises(TaskNotFoundError):
        backend.get_task(task_id)
    assert main(["purge", "--older-than", "soon", "--database-url", url]) == 2
    assert "older-than" in capsys.readouterr().err


def test_the_sweeper_runs_its_chores_after_each_sweep(backend):
    """Given a sweeper with chores, when it runs, then it calls them after a sweep."""
    stop = threading.Event()
    calls = []

    def chores():
        calls.append(1)
        stop.set()

    sweeper = Sweeper(backend.db, lambda _i: None, backend.now, 0.01, 60, chores=chores)
    sweeper.run(stop)
    assert calls == [1]
