"""Reproduction: the sweeper and a claim deadlock on PostgreSQL (seen in the chaos run).

Run by tests/chaos/test_regressions.py, or alone:
`.venv/bin/python tests/chaos/repro_sweeper_deadlock.py`;
exits 1 while the bug is there, 0 once it is fixed. Fixed in c8919c1.

`lease.claim` locks the task row (UPDATE ... RETURNING) and then deletes the task's
outbox rows. `Sweeper.sweep` deletes every stale outbox row first and then updates
`dispatched_at` of the due tasks. When a claim of task X runs between the two
statements of a sweep, each transaction waits for a row the other has locked:
    claim:  UPDATE tasker_tasks (X)          -> holds X
    sweep:  DELETE FROM tasker_outbox (X's)  -> holds X's outbox row
    sweep:  UPDATE tasker_tasks (X)          -> waits for the claim
    claim:  DELETE FROM tasker_outbox (X's)  -> waits for the sweep: deadlock
PostgreSQL aborts one of them after deadlock_timeout (1 s): a failed sweep, or a claim
retried by `Engine._write`; both cost a second and log an ERROR.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from datetime import timedelta

import psycopg

from tasker import StepTemplate, Tasker, TaskHandler, TaskRequest
from tasker.control.sweeper import Sweeper

PG = "host=127.0.0.1 port=5432 user=root"


class One(TaskHandler):
    name = "one"
    step_templates = [StepTemplate(name="a", handler=lambda task, seq, step: {})]  # noqa: RUF012


def main() -> int:
    dbname = f"tasker_repro_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG} dbname=postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    app = Tasker(database_url=f"postgresql+psycopg://root@127.0.0.1:5432/{dbname}")
    try:
        app.register(One)
        app.migrate()
        task_id = app.enqueue(TaskRequest(name="one")).task_id  # a task with an outbox row
        later = app.now() + timedelta(seconds=30)  # the sweeper sees everything as overdue
        sweeper = Sweeper(app.db, lambda _id: None, lambda: later, 5.0, 60.0)

        claim = psycopg.connect(f"{PG} dbname={dbname}")
        # The claim's first statement (lease.claim): the task row is now locked.
        claim.execute(
            "UPDATE tasker_tasks SET status = 'in_progress', lease_owner = 'repro',"
            " lease_epoch = lease_epoch + 1, lease_expires_at = now() + interval '60 s'"
            " WHERE task_id = %s",
            (task_id,),
        )
        errors: list[BaseException] = []

        def sweep() -> None:
            try:
                sweeper.sweep()
            except BaseException as exc:
                errors.append(exc)

        sweeping = threading.Thread(target=sweep)
        sweeping.start()
        # Wait until the sweep has deleted the outbox row and waits for the task row (or,
        # once fixed, has finished without waiting for the claim).
        with psycopg.connect(f"{PG} dbname={dbname}", autocommit=True) as watch:
            deadline = time.monotonic() + 10
            while (
                sweeping.is_alive()
                and not watch.execute(
                    "SELECT 1 FROM pg_stat_activity"
                    " WHERE datname = %s AND wait_event_type = 'Lock'",
                    (dbname,),
                ).fetchone()
            ):
                if time.monotonic() > deadline:
                    print("the sweep neither finished nor blocked within 10 s")
                    return 2
                time.sleep(0.02)
        # The claim's next statement (lease.claim): delete the task's outbox rows.
        try:
            claim.execute("DELETE FROM tasker_outbox WHERE task_id = %s", (task_id,))
            claim.commit()
        except psycopg.errors.DeadlockDetected as exc:
            errors.append(exc)
            claim.rollback()
        sweeping.join(10)
        claim.close()
        deadlocks = [e for e in errors if "deadlock" in str(e).lower()]
        if deadlocks:
            print(f"BUG: sweeper/claim deadlock: {deadlocks[0]!s:.200}")
            return 1
        print("no deadlock: the sweeper and a claim no longer wait on each other")
        return 0
    finally:
        app.close()
        with psycopg.connect(f"{PG} dbname=postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
