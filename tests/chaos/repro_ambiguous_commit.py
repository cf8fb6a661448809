"""Reproduction: a write whose COMMIT succeeded but reported an error is applied twice.

Run by tests/chaos/test_regressions.py, or alone:
`.venv/bin/python tests/chaos/repro_ambiguous_commit.py`;
exits 1 while the bug is there, 0 once it is fixed. Fixed in c8919c1. On PostgreSQL
each engine write is one statement outside a transaction; the same holds there.

`Engine._write` retries its transaction body on any transient error, including one
raised by the COMMIT itself (the server committed, then the connection dropped: what
a PostgreSQL restart can do to a transaction in flight). The body is not idempotent:
run again, it starts the same steps a second time (`attempts + 1` twice, two
`in_progress` transitions, annotations twice). Below, the transaction that records A
and starts B "fails" after its commit: B runs once (as attempt 1) but is stored with
2 attempts, which burns retry budget (with retry_limit=1 the step would be out of
attempts after one run). If it is the claim's transaction, the retried claim finds the
lease held (by itself) and gives up: the started steps sit `in_progress` until the
lease expires, then count as lost attempts although they never ran.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any

import sqlalchemy.exc as sa_exc

from tasker import StepTemplate, Tasker, TaskHandler, TaskRequest


def ok(task: Any, sequence: Any, step: Any) -> dict[str, Any]:
    return {"attempt": step.attempts}


class Chain(TaskHandler):
    name = "chain"
    step_templates = [  # noqa: RUF012
        StepTemplate(name="A", handler=ok),
        StepTemplate(name="B", handler=ok, depends_on=["A"]),
    ]


def main(database_url: str | None = None) -> int:
    """Run on `database_url` (a fresh database), or on a temporary SQLite file."""
    if database_url is not None:
        return _run(database_url)
    folder = tempfile.mkdtemp(prefix="tasker-repro-")
    try:
        return _run(f"sqlite:///{os.path.join(folder, 'repro.db')}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(database_url: str) -> int:
    app = Tasker(database_url=database_url)
    app.register(Chain)
    app.migrate()
    task_id = app.enqueue(TaskRequest(name="chain")).task_id
    real_apply = app.store.apply
    applies = {"n": 0}

    def flaky_apply(w: Any) -> int:
        applies["n"] += 1
        seq = real_apply(w)
        if applies["n"] == 2:  # start A, then this one records A and starts B: lost
            raise sa_exc.OperationalError("COMMIT", {}, ConnectionError("connection lost"))
        return seq

    app.store.apply = flaky_apply  # type: ignore[method-assign]
    app.run_until_idle()
    task = app.get_task(task_id)
    b = task.steps["B"]
    starts = [h for h in app.history(task_id) if h.step == "B" and h.to_status == "in_progress"]
    app.close()
    print(
        f"task {task.status}; B ran once as attempt {b.results['attempt']}, "
        f"stored attempts={b.attempts}, 'in_progress' transitions={len(starts)}"
    )
    if applies["n"] < 3:
        print("the write that reports an error after landing was never made")
        return 1
    if b.attempts != 1 or len(starts) != 1:
        print("BUG: the retried transaction was applied twice")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
