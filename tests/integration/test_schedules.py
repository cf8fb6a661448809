"""Durable schedules: `app.schedule`, `app.unschedule`, `app.schedules`, ticks."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from integration_support import task_class

from tasker import StepTemplate, TaskRequest
from tasker.cli.main import main
from tasker.control.schedules import tick_key
from tasker.errors import ContextValidationError, InvalidRequestError, UnknownTaskError
from tasker.store import schema as m
from tasker.testing.clock import FakeClock

HOUR = 3600
START = datetime(2026, 1, 5, 10, 30, tzinfo=timezone.utc)  # a Monday, winter time


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def report(task, sequence, step):
    return {"day": task.context["day"]}


SCHEMA = {"type": "object", "required": ["day"], "properties": {"day": {"type": "string"}}}


def register(app):
    app.register(task_class("report", [StepTemplate(name="r", handler=report)], schema=SCHEMA))


def stored_schedules(app) -> int:
    with app.db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(m.schedules)).scalar_one())


REQUEST = TaskRequest(name="report", context={"day": "today"}, initiator="cron")


def test_an_interval_schedule_enqueues_one_task_per_tick(backend, clock):
    """Given a schedule every hour, then its first tick is an hour after it was stored;
    before that run_until_idle enqueues nothing; at the tick it enqueues one task, keyed
    by the schedule and the tick, requested at the tick, and runs it."""
    register(backend)
    view = backend.schedule("hourly", REQUEST, every=timedelta(hours=1))
    assert view.next_tick == START + timedelta(hours=1)
    assert view.every == timedelta(hours=1) and view.cron is None and view.timezone == "UTC"
    clock.advance(HOUR - 1)
    backend.run_until_idle()
    assert backend.list_tasks(name="report") == []
    clock.advance(1)
    backend.run_until_idle()
    [task] = backend.list_tasks(name="report")
    assert task.status == "complete"
    assert task.idempotency_key == tick_key("hourly", START + timedelta(hours=1))
    assert task.requested_at == START + timedelta(hours=1)
    assert task.initiator == "cron" and task.context == {"day": "today"}
    assert backend.schedules()[0].next_tick == START + timedelta(hours=2)
    backend.run_until_idle()
    assert len(backend.list_tasks(name="report")) == 1


def test_ticks_missed_while_no_worker_ran_are_enqueued_once(backend, clock):
    """Given an hourly schedule and five hours and a half without any sweep, then the next
    run enqueues one task (for the first missed tick), and the next tick is the first
    one after now, in the schedule's phase."""
    register(backend)
    backend.schedule("hourly", REQUEST, every=HOUR)
    clock.advance(5.5 * HOUR)
    backend.run_until_idle()
    [task] = backend.list_tasks(name="report")
    assert task.requested_at == START + timedelta(hours=1)
    assert backend.schedules()[0].next_tick == START + timedelta(hours=6)


def test_a_cron_schedule_ticks_at_the_cron_times_of_its_time_zone(backend, clock):
    """Given "0 2 * * *" in Europe/Paris (UTC+1 in January), then the first tick is
    01:00 UTC of the next day, and after it the one of the day after."""
    register(backend)
    view = backend.schedule("nightly", REQUEST, cron="0 2 * * *", timezone="Europe/Paris")
    first = datetime(2026, 1, 6, 1, 0, tzinfo=timezone.utc)
    assert view.next_tick == first and view.cron == "0 2 * * *" and view.every is None
    clock.advance((first - START).total_seconds())
    backend.run_until_idle()
    [task] = backend.list_tasks(name="report")
    assert task.requested_at == first
    assert backend.schedules()[0].next_tick == first + timedelta(days=1)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"request": TaskRequest(name="nope"), "every": 60}, UnknownTaskError, "nope"),
        ({"request": TaskRequest(name="report"), "every": 60}, ContextValidationError, "day"),
        ({"request": REQUEST, "cron": "61 * * * *"}, InvalidRequestError, "cron"),
        ({"request": REQUEST, "cron": "every day"}, InvalidRequestError, "cron"),
        ({"request": REQUEST, "every": 0}, InvalidRequestError, "every"),
        ({"request": REQUEST, "every": timedelta(seconds=-5)}, InvalidRequestError, "every"),
        ({"request": REQUEST, "every": "1h"}, InvalidRequestError, "every"),
        ({"request": REQUEST}, InvalidRequestError, "exactly one"),
        ({"request": REQUEST, "every": 60, "cron": "* * * * *"}, InvalidRequestError, "one"),
        (
            {"request": REQUEST, "every": 60, "timezone": "Mars/Olympus"},
            InvalidRequestError,
            "zone",
        ),
        (
            {
                "request": TaskRequest(name="report", context={"day": "x"}, idempotency_key="k"),
                "every": 60,
            },
            InvalidRequestError,
            "idempotency_key",
        ),
        ({"request": {"name": "report"}, "every": 60}, InvalidRequestError, "TaskRequest"),
    ],
)
def test_an_invalid_schedule_raises_and_stores_nothing(backend, kwargs, error, words):
    """Given a request that enqueue would refuse, a cron expression that does not parse,
    an interval that is not positive, or bad timing, then schedule raises and stores
    nothing."""
    register(backend)
    with pytest.raises(error, match=words):
        backend.schedule("bad", **kwargs)
    assert stored_schedules(backend) == 0


def test_scheduling_a_name_again_updates_it(backend, clock):
    """Given an hourly schedule, when it is declared again with the same timing, then the
    request changes and the next tick stays; with another timing the tick is recomputed."""
    register(backend)
    backend.schedule("hourly", REQUEST, every=HOUR)
    clock.advance(600)
    changed = TaskRequest(name="report", context={"day": "tomorrow"})
    view = backend.schedule("hourly", changed, every=timedelta(hours=1))
    assert view.next_tick == START + timedelta(hours=1)
    assert view.request == changed
    view = backend.schedule("hourly", changed, every=2 * HOUR)
    assert view.next_tick == clock() + timedelta(hours=2)
    assert [s.name for s in backend.schedules()] == ["hourly"]


def test_unschedule_removes_the_schedule(backend, clock):
    """Given a schedule, when it is unscheduled, then no tick fires and it is not listed;
    unscheduling it again says there was none."""
    register(backend)
    backend.schedule("hourly", REQUEST, every=HOUR)
    assert backend.unschedule("hourly") is True
    assert backend.unschedule("hourly") is False
    clock.advance(2 * HOUR)
    backend.run_until_idle()
    assert backend.schedules() == []
    assert backend.list_tasks(name="report") == []


def test_one_task_per_tick_however_many_workers_sweep(make_app, clock):
    """Given six apps on one database and a due tick, when all of them run their
    housekeeping at the same moment from their own threads, then exactly one task is
    enqueued for the tick and the schedule moves on once."""
    apps = [make_app() for _ in range(6)]
    for app in apps:
        register(app)
    apps[0].schedule("hourly", REQUEST, every=HOUR)
    clock.advance(HOUR)
    barrier = threading.Barrier(len(apps))
    errors: list[BaseException] = []

    def sweep(app):
        barrier.wait()
        try:
            app.housekeeping()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sweep, args=(a,)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    tasks = apps[0].list_tasks(name="report")
    assert [t.idempotency_key for t in tasks] == [tick_key("hourly", START + timedelta(hours=1))]
    assert apps[0].schedules()[0].next_tick == START + timedelta(hours=2)


def test_a_tick_whose_task_is_not_registered_here_is_left_for_another_worker(make_app, clock):
    """Given a worker that does not register the schedule's task, when it sweeps at the
    tick, then nothing is enqueued and the tick stays due for a worker that knows it."""
    knows, other = make_app(), make_app()
    register(knows)
    knows.schedule("hourly", REQUEST, every=HOUR)
    clock.advance(HOUR)
    other.housekeeping()
    assert knows.schedules()[0].next_tick == START + timedelta(hours=1)
    knows.housekeeping()
    assert len(knows.list_tasks(name="report")) == 1


def test_the_schedules_command_lists_them(backend, clock, capsys):
    """Given two schedules, `tasker schedules` prints each with its task and next tick."""
    register(backend)
    backend.schedule("nightly", REQUEST, cron="0 2 * * *")
    backend.schedule("hourly", REQUEST, every=HOUR)
    url = backend.db.engine.url.render_as_string(hide_password=False)
    assert main(["schedules", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "hourly" in out and "nightly" in out and "0 2 * * *" in out
    assert "2026-01-05 11:30:00Z" in out and "2026-01-06 02:00:00Z" in out
