"""Real `tasker worker` processes on PostgreSQL and Redis.

Each test gets a fresh PostgreSQL database and a flushed Redis db 14, writes a small app
module to a temporary folder (on the workers' PYTHONPATH) and runs workers with
`python -m tasker worker MODULE:make_app --processes 1`, so the test owns every pid.
When PostgreSQL or Redis cannot be reached the tests FAIL (they are never skipped).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from services_support import flushed_redis, kill_group, start_worker

from tasker import Tasker, TaskRequest

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PG = "host=127.0.0.1 port=5432 user=root"
REDIS_DB = 14
BROKER_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
LEASE_SECONDS = 3
SWEEP_SECONDS = 0.5

APP_MODULE = '''
"""A diamond A -> (B, C) -> D whose steps sleep as the context says and report their pid."""

import gc
import os
import time

from tasker import StepTemplate, Tasker, TaskHandler
from tasker.errors import RetryableError


def work(task, sequence, step):
    ctx = task.context
    if step.name in ctx.get("fail_once", []) and step.attempts == 1:
        raise RetryableError("the first attempt fails", retry_after=ctx.get("retry_after", 1))
    started = time.time()
    time.sleep(ctx.get("sleep", {}).get(step.name, ctx.get("default_sleep", 0.0)))
    return {
        "pid": os.getpid(),
        "attempt": step.attempts,
        "started": started,
        "ended": time.time(),
        "frozen": gc.get_freeze_count(),  # objects the worker moved out of the collector
    }


class Diamond(TaskHandler):
    name = "diamond"
    step_templates = [
        StepTemplate(name="A", handler=work),
        StepTemplate(name="B", handler=work, depends_on=["A"]),
        StepTemplate(name="C", handler=work, depends_on=["A"]),
        StepTemplate(name="D", handler=work, depends_on=["B", "C"]),
    ]


def make_app(**settings):
    app = Tasker(**settings)
    app.register(Diamond)
    return app
'''


# -- services ------------------------------------------------------------------------


def _admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(f"{PG} dbname=postgres", autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL is not reachable on 127.0.0.1:5432 ({exc}); these tests need it: "
            "start it with scripts/services",
            pytrace=False,
        )


@contextmanager
def database() -> Iterator[str]:
    """A fresh PostgreSQL database; its SQLAlchemy URL."""
    name = f"tasker_it_{uuid.uuid4().hex[:10]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://root@127.0.0.1:5432/{name}"
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def broker() -> contextlib.AbstractContextManager[redis.Redis]:
    """Redis db 14, flushed before and after the test."""
    return flushed_redis(REDIS_DB, "these tests need")


# -- worker processes ----------------------------------------------------------------


class Workers:
    """Starts `tasker worker` processes and makes sure none outlives the test."""

    def __init__(self, folder: Path, module: str, env: dict[str, str]) -> None:
        self.folder = folder
        self.module = module
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}

    def start(self, threads: int = 4) -> subprocess.Popen[bytes]:
        log = self.folder / f"worker-{len(self.procs)}.log"
        proc = start_worker(f"{self.module}:make_app", threads, self.folder, self.env, log)
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
        """Wait for the worker's start-up log line (its consumer and sweeper are running)."""
        wait_until(
            lambda: " thread(s) on " in self.logs[proc.pid].read_text(errors="replace"),
            timeout,
            f"worker {proc.pid} to start",
            self,
            alive=[proc],
        )

    def output(self) -> str:
        parts = []
        for pid, log in self.logs.items():
            text = log.read_text(errors="replace") if log.exists() else ""
            parts.append(f"--- worker {pid} (last 3000 chars) ---\n{text[-3000:]}")
        return "\n".join(parts)

    def stop_all(self) -> None:
        for proc in self.procs:
            kill_group(proc)


@dataclass
class Deployment:
    app: Tasker
    workers: Workers
    sql: psycopg.Connection[Any]
    broker: redis.Redis


def wait_until(
    cond: Callable[[], bool],
    timeout: float,
    what: str,
    workers: Workers | None = None,
    alive: list[subprocess.Popen[bytes]] | None = None,
) -> None:
    """Poll `cond` until it holds; fail with the workers' output after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        for proc in alive or []:
            if proc.poll() is not None:
                pytest.fail(
                    f"worker {proc.pid} exited with {proc.returncode} while waiting for {what}\n"
                    + (workers.output() if workers else "")
                )
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {timeout:g} s waiting for {what}\n"
                + (workers.output() if workers else "")
            )
        time.sleep(0.05)


@contextmanager
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """A fresh database and Redis db; the app (to enqueue and inspect) and its workers.

    Entered inside the test (not a fixture), so that unreachable services FAIL the
    test rather than erroring its set-up.
    """
    with database() as url, broker() as r:
        yield from _deployment(tmp_path, url, r)


def _deployment(tmp_path: Path, database: str, broker: redis.Redis) -> Iterator[Deployment]:
    module = f"itapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(APP_MODULE))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "TASKER_DATABASE_URL": database,
        "TASKER_BROKER_URL": BROKER_URL,
        "TASKER_LEASE_SECONDS": str(LEASE_SECONDS),
        "TASKER_SWEEP_SECONDS": str(SWEEP_SECONDS),
        "TASKER_BACKOFF_BASE": "0.2",
        "TASKER_BACKOFF_MAX": "1",
    }
    sys.path.insert(0, str(tmp_path))
    try:
        app_module = __import__(module)
    finally:
        sys.path.remove(str(tmp_path))
    app = app_module.make_app(
        database_url=database,
        broker_url=BROKER_URL,
        lease_seconds=LEASE_SECONDS,
        sweep_seconds=SWEEP_SECONDS,
    )
    app.migrate()  # before any worker starts; the workers' own migrate is then a no-op
    workers = Workers(tmp_path, module, env)
    sql = psycopg.connect(database.replace("postgresql+psycopg://", "postgresql://"))
    sql.autocommit = True
    try:
        yield Deployment(app, workers, sql, broker)
    finally:
        workers.stop_all()
        sql.close()
        app.close()
        sys.modules.pop(module, None)


def diamonds(app: Tasker, n: int, **context: Any) -> list[int]:
    return [app.enqueue(TaskRequest(name="diamond", context=context)).task_id for _ in range(n)]


def statuses(sql: psycopg.Connection[Any], ids: list[int]) -> dict[str, int]:
    rows = sql.execute(
        "SELECT status, count(*) FROM tasker_tasks WHERE task_id = ANY(%s) GROUP BY status",
        (ids,),
    ).fetchall()
    return dict(rows)


def all_complete(sql: psycopg.Connection[Any], ids: list[int]) -> Callable[[], bool]:
    return lambda: statuses(sql, ids) == {"complete": len(ids)}


def held_leases(sql: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return sql.execute(
        "SELECT task_id, status, lease_owner FROM tasker_tasks WHERE lease_owner IS NOT NULL"
    ).fetchall()


def step_rows(sql: psycopg.Connection[Any], ids: list[int]) -> list[tuple[Any, ...]]:
    """(task_id, step, status, attempts, results) of every step of the tasks."""
    return sql.execute(
        """SELECT s.task_id, n.name, s.status, s.attempts, s.results
             FROM tasker_workflow_steps s
             JOIN tasker_named_steps n USING (named_step_id)
            WHERE s.task_id = ANY(%s)
            ORDER BY s.task_id, s.position""",
        (ids,),
    ).fetchall()


def stop_gracefully(workers: Workers, proc: subprocess.Popen[bytes], timeout: float) -> float:
    """SIGTERM the worker and wait for it to exit; returns how long that took."""
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker {proc.pid} ignored SIGTERM for {timeout} s\n{workers.output()}")
    return time.monotonic() - began


# -- the tests -----------------------------------------------------------------------


def test_worker_processes_share_the_work(tmp_path: Path) -> None:
    with deployment(tmp_path) as d:
        share_the_work(d.app, d.workers, d.sql)


def share_the_work(app: Tasker, workers: Workers, sql: psycopg.Connection[Any]) -> None:
    procs = [workers.start(), workers.start()]
    for proc in procs:
        workers.wait_ready(proc)

    ids = diamonds(app, 40, default_sleep=0.05)
    wait_until(all_complete(sql, ids), 30, "40 diamonds to complete", workers, alive=procs)

    rows = step_rows(sql, ids)
    assert len(rows) == 4 * len(ids)
    assert {r[2] for r in rows} == {"complete"}
    assert {r[3] for r in rows} == {1}, "a step ran more than once"
    pids = {r[4]["pid"] for r in rows}
    assert pids == {p.pid for p in procs}, f"steps ran in {pids}, workers are {procs}"
    # Each worker froze its start-up heap, so full collections skip it (no long GC pauses).
    assert min(r[4]["frozen"] for r in rows) > 10_000, [r[4]["frozen"] for r in rows[:4]]
    # The DAG held: D started after B and C ended, B and C after A.
    by_task: dict[int, dict[str, dict[str, Any]]] = {}
    for task_id, name, _, _, results in rows:
        by_task.setdefault(task_id, {})[name] = results
    for steps in by_task.values():
        assert steps["B"]["started"] >= steps["A"]["ended"]
        assert steps["C"]["started"] >= steps["A"]["ended"]
        assert steps["D"]["started"] >= max(steps["B"]["ended"], steps["C"]["ended"])
    assert held_leases(sql) == []
    for proc in procs:
        stop_gracefully(workers, proc, 20)
        assert proc.returncode == 0, workers.output()


def test_sigterm_finishes_the_step_in_flight_and_hands_the_task_back(tmp_path: Path) -> None:
    with deployment(tmp_path) as d:
        sigterm_is_graceful(d.app, d.workers, d.sql)


def sigterm_is_graceful(app: Tasker, workers: Workers, sql: psycopg.Connection[Any]) -> None:
    first = workers.start()
    workers.wait_ready(first)
    ids = diamonds(app, 3, sleep={"A": 2.5}, default_sleep=0.02)

    def a_running() -> bool:
        return [r[2] for r in step_rows(sql, ids) if r[1] == "A"] == ["in_progress"] * 3

    wait_until(a_running, 15, "step A of the 3 tasks to be in progress", workers, [first])
    took = stop_gracefully(workers, first, 25)
    assert first.returncode == 0, workers.output()
    assert took >= 1.0, "the worker did not wait for the steps in flight"

    # Nothing is left claimed by the dead worker, nothing is half-run.
    assert held_leases(sql) == []
    rows = step_rows(sql, ids)
    assert not [r for r in rows if r[2] == "in_progress"], rows
    for task_id, name, status, attempts, results in rows:
        if name == "A":  # the step in flight finished within the shutdown
            assert (status, attempts, results["pid"]) == ("complete", 1, first.pid), task_id
        else:  # and nothing new started once the worker was told to stop
            assert (status, attempts) == ("pending", 0), (task_id, name)
    assert statuses(sql, ids) == {"in_progress": 3}

    second = workers.start()
    wait_until(all_complete(sql, ids), 20, "the tasks to finish on a new worker", workers, [second])
    for _, name, status, attempts, results in step_rows(sql, ids):
        assert (status, attempts) == ("complete", 1), name  # A was not run again
        assert results["pid"] == (first.pid if name == "A" else second.pid)
    assert held_leases(sql) == []
    stop_gracefully(workers, second, 20)
    assert second.returncode == 0, workers.output()


def test_lost_messages_are_recovered_by_the_sweeper(tmp_path: Path) -> None:
    with deployment(tmp_path) as d:
        lost_messages(d.app, d.workers, d.sql, d.broker)


def lost_messages(
    app: Tasker, workers: Workers, sql: psycopg.Connection[Any], broker: redis.Redis
) -> None:
    # The task messages are lost before any worker could take them.
    ids = diamonds(app, 3, default_sleep=0.01)
    assert app.relay is not None and app.relay.flush()
    assert broker.llen("dramatiq:tasker") == 3, "enqueue sent no message"
    broker.flushdb()
    first = workers.start()
    wait_until(
        all_complete(sql, ids), 20, "the sweeper to re-send the lost tasks", workers, [first]
    )
    assert "sweeper re-sent" in workers.logs[first.pid].read_text()

    # A delayed retry message is lost: B fails once and asks for a retry in 2 s; the
    # worker holding the delayed message dies and Redis loses everything it had.
    retried = diamonds(app, 1, fail_once=["B"], retry_after=2, default_sleep=0.01)

    def waiting_for_retry() -> bool:
        b = next(r for r in step_rows(sql, retried) if r[1] == "B")
        return b[2] == "error" and b[3] == 1 and held_leases(sql) == []

    wait_until(waiting_for_retry, 10, "step B to fail once and wait for its retry", workers)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    broker.flushdb()
    second = workers.start()
    wait_until(all_complete(sql, retried), 20, "the lost retry to be swept", workers, [second])
    assert "sweeper re-sent" in workers.logs[second.pid].read_text()
    b = next(r for r in step_rows(sql, retried) if r[1] == "B")
    assert (b[2], b[3], b[4]["pid"]) == ("complete", 2, second.pid)
    assert held_leases(sql) == []
    stop_gracefully(workers, second, 20)
    assert second.returncode == 0, workers.output()
