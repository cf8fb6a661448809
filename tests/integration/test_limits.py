"""Limits per dependent system: in one process on both stores, and across two worker
processes on PostgreSQL and Redis (a killed worker's slots come back)."""

from __future__ import annotations

import os
import textwrap
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from integration_support import task_class
from services_support import kill_group
from test_worker import Workers, broker, database, wait_until

from tasker import Counts, StepTemplate, Tasker, TaskRequest
from tasker.errors import ConfigurationError
from tasker.store import schema as m


def ok(task, sequence, step):
    return {"ok": step.name}


def test_per_second_holds_starts_back_by_the_app_clock_without_using_attempts(backend, clock):
    """Given a limit of one start per second, when three one-step tasks of that system are
    run, then one starts; the others wait pending with waiting_for "limit" and no attempt
    used, and one more starts each time the clock moves on a second; the starts after a
    wait say so in the history."""
    backend.limit("sms", per_second=1)
    backend.register(
        task_class("text", [StepTemplate(name="send", handler=ok, dependent_system="sms")])
    )
    ids = [backend.enqueue(TaskRequest(name="text", context={"i": i})).task_id for i in range(3)]
    done = []
    for _ in range(3):
        backend.run_until_idle()
        views = [backend.get_task(t) for t in ids]
        done.append(sum(v.status == "complete" for v in views))
        for v in views:
            if v.status != "complete":
                step = v.steps["send"]
                assert (step.status, step.waiting_for, step.attempts) == ("pending", "limit", 0)
        clock.advance(1.0)
    assert done == [1, 2, 3]
    reasons = [
        h.reason for t in ids for h in backend.history(t) if h.to_status == "in_progress" and h.step
    ]
    assert sum("after waiting for the limit of 'sms'" in r for r in reasons) == 2


def test_a_freed_slot_wakes_a_held_task_while_the_clock_stands_still(backend):
    """Given a limit of one at a time and a task whose step holds the slot until released,
    when a second task's step is held back (waiting_for "limit"), then releasing the first
    lets the second complete with one attempt each; the fake clock never moved."""
    gate = threading.Event()

    def hold(task, sequence, step):
        if task.context["first"]:
            assert gate.wait(30)
        return {"ok": True}

    backend.limit("bank", concurrency=1)
    counts = backend.observe(Counts())
    backend.register(
        task_class("pay", [StepTemplate(name="call", handler=hold, dependent_system="bank")])
    )
    first = backend.enqueue(TaskRequest(name="pay", context={"first": True})).task_id
    backend.start(threads=4)
    try:
        deadline = time.monotonic() + 20
        while backend.get_task(first).steps["call"].status != "in_progress":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = backend.enqueue(TaskRequest(name="pay", context={"first": False})).task_id
        while backend.get_task(second).steps["call"].waiting_for != "limit":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert backend.get_task(second).steps["call"].attempts == 0
        assert counts.limit_waits >= 1  # the observers heard of the wait
        gate.set()
        done = backend.wait(second, timeout=20)
        assert done.status == "complete" and done.steps["call"].attempts == 1
        assert backend.wait(first, timeout=20).status == "complete"
    finally:
        gate.set()
        backend.stop()


def test_a_limit_below_one_or_without_a_name_is_refused_and_nothing_is_stored(backend):
    """Given bad limits, Then each raises ConfigurationError naming the problem, and no
    limit row is stored; calling again changes a limit, and with no bound lifts it."""
    for bad in ({"concurrency": 0}, {"per_second": 0}, {"concurrency": True}, {"per_second": 1.5}):
        with pytest.raises(ConfigurationError, match="at least 1"):
            backend.limit("bank", **bad)
    with pytest.raises(ConfigurationError, match="dependent system"):
        backend.limit("", concurrency=1)

    def rows():
        with backend.db.read() as conn:
            return [
                tuple(r)
                for r in conn.execute(
                    sa.select(m.limits.c.name, m.limits.c.concurrency, m.limits.c.per_second)
                )
            ]

    assert rows() == []
    backend.limit("bank", concurrency=2)
    backend.limit("bank", concurrency=3, per_second=10)
    assert rows() == [("bank", 3, 10)]
    backend.limit("bank")
    assert rows() == []


# -- two worker processes on PostgreSQL and Redis --------------------------------------

APP_MODULE = """
import os, time
from tasker import StepTemplate, Tasker, TaskHandler

def call_bank(task, sequence, step):
    started = time.time()
    time.sleep(task.context.get("sleep", 0.1))
    return {"pid": os.getpid(), "started": started, "ended": time.time()}

class Payments(TaskHandler):
    name = "payments"
    step_templates = [
        StepTemplate(name=n, handler=call_bank, dependent_system="bank") for n in ("a", "b", "c")
    ]

def make_app(**settings):
    app = Tasker(**settings)
    app.register(Payments)
    return app
"""


def overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = now = 0
    for _, d in points:
        now += d
        most = max(most, now)
    return most


@pytest.mark.postgres
@pytest.mark.redis
def test_two_worker_processes_share_one_limit_and_a_killed_workers_slots_come_back(
    tmp_path: Path,
) -> None:
    """Given `bank` limited to two at a time and two worker processes, when 15 tasks of
    three parallel bank steps run, then never more than two bank steps ran at once across
    both processes, both ran some, and every step ran once; when one worker is killed while
    it holds slots, the other finishes the next batch once the dead worker's leases (and
    so its slots) expire."""
    module = f"limapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(APP_MODULE))
    with database() as url, broker():
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1",
            "TASKER_DATABASE_URL": url,
            "TASKER_BROKER_URL": "redis://127.0.0.1:6379/14",
            "TASKER_LEASE_SECONDS": "3",
            "TASKER_SWEEP_SECONDS": "0.5",
        }
        app = Tasker(database_url=url, broker_url="redis://127.0.0.1:6379/14", lease_seconds=3)
        app.migrate()
        app.limit("bank", concurrency=2)
        app.register(task_class("payments", [
            StepTemplate(name=n, handler=ok, dependent_system="bank") for n in ("a", "b", "c")
        ]))  # fmt: skip
        workers = Workers(tmp_path, module, env)
        sql = psycopg.connect(
            url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
        )
        try:
            procs = [workers.start(), workers.start()]
            for proc in procs:
                workers.wait_ready(proc)
            ids = [
                app.enqueue(TaskRequest(name="payments", context={"sleep": 0.1})).task_id
                for _ in range(15)
            ]

            def complete(ids: list[int]) -> bool:
                rows = sql.execute(
                    "SELECT count(*) FROM tasker_tasks"
                    " WHERE task_id = ANY(%s) AND status = 'complete'",
                    (ids,),
                ).fetchone()
                return rows is not None and rows[0] == len(ids)

            wait_until(lambda: complete(ids), 90, "15 limited tasks", workers, alive=procs)
            rows = sql.execute(
                "SELECT attempts, results FROM tasker_workflow_steps WHERE task_id = ANY(%s)",
                (ids,),
            ).fetchall()
            assert len(rows) == 45 and {r[0] for r in rows} == {1}
            assert overlap([(r[1]["started"], r[1]["ended"]) for r in rows]) <= 2
            assert {r[1]["pid"] for r in rows} == {p.pid for p in procs}

            # Kill one worker while its steps hold slots: they come back with its leases.
            more = [
                app.enqueue(TaskRequest(name="payments", context={"sleep": 2})).task_id
                for _ in range(2)
            ]

            def holding(pid: int) -> bool:
                got = sql.execute(
                    "SELECT count(*) FROM tasker_limit_holds h JOIN tasker_tasks t USING (task_id)"
                    " WHERE h.released_at IS NULL AND t.lease_owner LIKE %s",
                    (f"%:{pid}:%",),
                ).fetchone()
                return got is not None and got[0] > 0

            wait_until(
                lambda: holding(procs[0].pid) or holding(procs[1].pid), 30, "a held slot", workers
            )
            victim = procs[0] if holding(procs[0].pid) else procs[1]
            survivor = procs[1] if victim is procs[0] else procs[0]
            kill_group(victim)
            wait_until(
                lambda: complete(more), 90, "the tasks after the kill", workers, alive=[survivor]
            )
            late = sql.execute(
                "SELECT results FROM tasker_workflow_steps WHERE task_id = ANY(%s)", (more,)
            ).fetchall()
            assert overlap([(r[0]["started"], r[0]["ended"]) for r in late]) <= 2
        finally:
            workers.stop_all()
            sql.close()
            app.close()
