"""The app the chaos test's workers run: diamonds whose steps log every execution, and
tasks whose `for_each` step logs every run of each of its items.

After the diamond (A -> B, C -> D) comes E, a transactional step: it inserts one row
for its (task, step) into the user table `chaos_ledger` through `step.connection`, in
the transaction that records its outcome, so the table must end with exactly one row
per task whatever was killed (the table has no unique key that would hide a second).

A `chaos_sleeper` task sleeps and reattempts: after W come S (`wait=` 3 s after W), A
(`after=` 6 s after the task was created) and R, which asks to run again 1 s later
(`step.reattempt`) until it has reattempted 3 times; each run logs the reattempts it saw.

Each execution of a step (one call of the handler) gets a row in `chaos_log`, in the
same PostgreSQL database but written on a separate autocommit connection: inserted
before the step's work (a short sleep) and completed with its end time after it. When
either write fails (PostgreSQL is restarting) the handler appends the execution, with
the time it gave up, to a per-process journal file instead and fails the attempt, so
every execution whose worker was not killed has a known end.

Configured by the test through the environment: `TASKER_*`, `CHAOS_LOG_DSN` and
`CHAOS_JOURNAL_DIR`.
"""

from __future__ import annotations

import json
import os
import queue
import random
import time
import uuid
from typing import Any

import psycopg
import sqlalchemy as sa

from tasker import StepTemplate, Tasker, TaskHandler

RETRY_LIMIT = 10
LOG_TABLE = """
CREATE TABLE IF NOT EXISTS chaos_log (
    execution_id text PRIMARY KEY,
    task_id bigint NOT NULL,
    step text NOT NULL,
    pid integer NOT NULL,
    attempt integer NOT NULL,
    started_at double precision NOT NULL,
    ended_at double precision,
    reattempts integer NOT NULL DEFAULT 0
)
"""


LEDGER_TABLE = """
CREATE TABLE IF NOT EXISTS chaos_ledger (
    task_id bigint NOT NULL,
    step text NOT NULL,
    attempt integer NOT NULL,
    pid integer NOT NULL
)
"""
_BOOK = sa.text(
    "INSERT INTO chaos_ledger (task_id, step, attempt, pid)"
    " VALUES (:task_id, :step, :attempt, :pid)"
)


_idle: queue.SimpleQueue[psycopg.Connection[Any]] = queue.SimpleQueue()


def _connect() -> psycopg.Connection[Any]:
    return psycopg.connect(os.environ["CHAOS_LOG_DSN"], autocommit=True, connect_timeout=2)


def _log(query: str, params: tuple[Any, ...]) -> None:
    """Run one autocommit statement on a pooled connection; raise if it fails.

    When PostgreSQL dropped the pooled connection (a restart), the pool is emptied and
    the statement is run once more on a new connection (the statements are idempotent).
    """
    try:
        conn, pooled = _idle.get_nowait(), True
    except queue.Empty:
        conn, pooled = _connect(), False
    try:
        conn.execute(query, params)
    except psycopg.Error:
        dropped = conn.broken  # the server went away (close() would hide it)
        conn.close()
        if not (pooled and dropped):
            raise
        while True:  # the other idle connections died with the same server
            try:
                _idle.get_nowait().close()
            except queue.Empty:
                break
        conn = _connect()
        try:
            conn.execute(query, params)
        except psycopg.Error:
            conn.close()
            raise
    _idle.put(conn)


def _journal(record: dict[str, Any]) -> None:
    path = os.path.join(os.environ["CHAOS_JOURNAL_DIR"], f"journal-{os.getpid()}.jsonl")
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def work(task: Any, sequence: Any, step: Any, pause: tuple[float, float] = (0.02, 0.08)) -> Any:
    """Log the start, sleep 20-80 ms, log the end.

    An item of a `for_each` step logs as step `E<index>` (its attempt: the item's).
    """
    name = step.name if step.item_index is None else f"E{step.item_index}"
    rec: dict[str, Any] = {
        "execution_id": uuid.uuid4().hex,
        "task_id": task.task_id,
        "step": name,
        "pid": os.getpid(),
        "attempt": step.attempts,
        "reattempts": step.reattempts,
        "started_at": time.time(),
    }
    try:
        _log(
            "INSERT INTO chaos_log"
            " (execution_id, task_id, step, pid, attempt, reattempts, started_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                rec["execution_id"],
                rec["task_id"],
                rec["step"],
                rec["pid"],
                rec["attempt"],
                rec["reattempts"],
                rec["started_at"],
            ),
        )
        time.sleep(random.uniform(*pause))
        ended = time.time()
        _log(
            "UPDATE chaos_log SET ended_at = %s WHERE execution_id = %s",
            (ended, rec["execution_id"]),
        )
    except psycopg.Error:
        rec["ended_at"] = time.time()  # the work, if any, is over: the handler now fails
        _journal(rec)
        raise
    return {"pid": rec["pid"], "attempt": rec["attempt"], "execution_id": rec["execution_id"]}


def book(task: Any, sequence: Any, step: Any) -> dict[str, Any]:
    """Transactional: the ledger row in the step's transaction, then `work` (logged)."""
    row = {"task_id": task.task_id, "step": step.name, "attempt": step.attempts}
    step.connection.execute(_BOOK, {**row, "pid": os.getpid()})
    return work(task, sequence, step)


class ChaosDiamond(TaskHandler):
    """A -> (B, C) -> D -> E (transactional)."""

    name = "chaos_diamond"
    step_templates = [  # noqa: RUF012
        StepTemplate(name="A", handler=work, retry_limit=RETRY_LIMIT),
        StepTemplate(name="B", handler=work, depends_on=["A"], retry_limit=RETRY_LIMIT),
        StepTemplate(name="C", handler=work, depends_on=["A"], retry_limit=RETRY_LIMIT),
        StepTemplate(name="D", handler=work, depends_on=["B", "C"], retry_limit=RETRY_LIMIT),
        StepTemplate(
            name="E", handler=book, depends_on=["D"], retry_limit=RETRY_LIMIT, transactional=True
        ),
    ]


#: Items of a `ChaosItems` task's for_each step.
ITEMS = 50


def work_item(task: Any, sequence: Any, step: Any) -> Any:
    """One item: logged like a step, sleeping longer (50-150 ms) so that kills cut some."""
    return work(task, sequence, step, (0.05, 0.15))


class ChaosItems(TaskHandler):
    """One for_each step over `ITEMS` items, each run logged."""

    name = "chaos_items"
    step_templates = [  # noqa: RUF012
        StepTemplate(
            name="L",
            handler=work_item,
            retry_limit=RETRY_LIMIT,
            for_each=lambda task, sequence: list(range(ITEMS)),
            concurrency=4,
        ),
    ]


#: The sleeper's waits (seconds), its reattempts and how long each reattempt waits.
WAIT = 3.0
AFTER = 6.0
REATTEMPTS = 3
REATTEMPT_WAIT = 1.0


def work_then_reattempt(task: Any, sequence: Any, step: Any) -> Any:
    """Logged like a step (its end logged before the request); then run again later
    until this step has reattempted `REATTEMPTS` times."""
    done = work(task, sequence, step)
    if step.reattempts < REATTEMPTS:
        step.reattempt(REATTEMPT_WAIT)
    return done


class ChaosSleeper(TaskHandler):
    """W -> S (wait), W -> A (after), W -> R (reattempts)."""

    name = "chaos_sleeper"
    step_templates = [  # noqa: RUF012
        StepTemplate(name="W", handler=work, retry_limit=RETRY_LIMIT),
        StepTemplate(name="S", handler=work, depends_on=["W"], wait=WAIT, retry_limit=RETRY_LIMIT),
        StepTemplate(
            name="A", handler=work, depends_on=["W"], after=AFTER, retry_limit=RETRY_LIMIT
        ),
        StepTemplate(
            name="R",
            handler=work_then_reattempt,
            depends_on=["W"],
            retry_limit=RETRY_LIMIT,
            max_reattempts=REATTEMPTS,
        ),
    ]


def make_app(**settings: Any) -> Tasker:
    """The app, configured from `settings` and the `TASKER_*` environment."""
    app = Tasker(**settings)
    app.register(ChaosDiamond)
    app.register(ChaosItems)
    app.register(ChaosSleeper)
    return app
