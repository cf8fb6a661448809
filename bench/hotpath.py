"""The hot path of one diamond on PostgreSQL, statement by statement, in one process.

The throughput benchmark's wall-clock rates swing by ±30 % on a shared machine; this
counts what a diamond costs instead. One process enqueues a diamond (`app.enqueue`,
the in-process broker) and runs its engine pass (`app.engine.run_task`, what a worker
runs for the task's message), N times one after the other, and reports per task:

- the CPU time of this process in the enqueue and in the pass (`time.process_time`,
  every thread: the pass's step threads too);
- the CPU time of the PostgreSQL backends serving the benchmark's database (/proc);
- every statement sent through psycopg (`Cursor.execute`), grouped by its first words:
  how many per task, its text length, and its median and mean round-trip time.

Run from the repository root (a fresh database is created and dropped):
  .venv/bin/python bench/hotpath.py --n 300
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.diamond_app import TASK_NAME, make_app  # noqa: E402
from tasker import TaskRequest  # noqa: E402

_times: dict[str, list[float]] = defaultdict(list)
_lengths: dict[str, int] = {}
_recording = [False]


def _kind(sql: str) -> str:
    words = " ".join(str(sql).split())
    if words.startswith("WITH "):  # name a statement of CTEs by its CTEs
        names = [w for w, nxt in zip(words.split(), words.split()[1:], strict=False) if nxt == "AS"]
        return "WITH " + ",".join(n for n in names if n.isidentifier())[:60]
    return words[:70]


def _patch() -> None:
    original = psycopg.Cursor.execute

    def execute(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        if not _recording[0]:
            return original(self, query, params, **kw)
        began = time.perf_counter()
        try:
            return original(self, query, params, **kw)
        finally:
            kind = _kind(query if isinstance(query, str) else query.as_string(self))
            _times[kind].append(time.perf_counter() - began)
            _lengths[kind] = len(query) if isinstance(query, str) else 0

    psycopg.Cursor.execute = execute  # type: ignore[method-assign]


def _cpu(pids: set[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--pg", default="host=127.0.0.1 port=5432 user=root")
    args = p.parse_args()
    dbname = f"tasker_hot_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(f"{args.pg} dbname=postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{dbname}"')
    _patch()
    try:
        app = make_app(database_url=f"postgresql+psycopg://root@127.0.0.1:5432/{dbname}")
        app.migrate()
        request = TaskRequest(name=TASK_NAME)
        for _ in range(args.warmup):
            app.engine.run_task(app.enqueue(request).task_id)
        backends = {
            int(r[0])
            for r in admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,)
            ).fetchall()
        }
        enq = run = 0.0
        pg_before = _cpu(backends)
        _recording[0] = True
        for _ in range(args.n):
            c0 = time.process_time()
            tid = app.enqueue(request).task_id
            c1 = time.process_time()
            app.engine.run_task(tid)
            c2 = time.process_time()
            enq += c1 - c0
            run += c2 - c1
        _recording[0] = False
        pg = _cpu(backends) - pg_before
        status = app.get_task(tid).status
        app.close()
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        admin.close()
    n = args.n
    print(f"last task {status}; load average {os.getloadavg()[0]:.2f}")
    print(
        f"CPU ms/task: enqueue {enq * 1000 / n:.3f}, pass {run * 1000 / n:.3f}, "
        f"postgres {pg * 1000 / n:.3f}"
    )
    total_n = sum(len(v) for v in _times.values())
    total_t = sum(sum(v) for v in _times.values())
    print(f"statements/task {total_n / n:.2f}, round-trip ms/task {total_t * 1000 / n:.3f}")
    print("| statement | per task | chars | median ms | mean ms |")
    print("|---|---|---|---|---|")
    for kind, ts in sorted(_times.items(), key=lambda kv: -sum(kv[1])):
        print(
            f"| {kind} | {len(ts) / n:.2f} | {_lengths[kind]} "
            f"| {statistics.median(ts) * 1000:.3f} | {statistics.mean(ts) * 1000:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
