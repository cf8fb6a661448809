"""The hot path of one diamond on PostgreSQL, statement by statement, in one process.

The throughput benchmark's wall-clock rates swing by ±30 % on a shared machine; this
counts what a diamond costs instead. One process enqueues a diamond (`app.enqueue`,
the in-process broker) and runs its engine pass (`app.engine.run_task`, what a worker
runs for the task's message), one after the other, and reports per task:

- the CPU time of this process in the enqueue and in the pass (`time.process_time`,
  every thread: the pass's step threads too), and the wall time of both;
- the CPU time of the PostgreSQL backends serving its database (/proc);
- every statement sent through psycopg (`Cursor.execute`), grouped by its first words:
  how many per task, its text length, and its median round-trip time.

`--compare` runs two trees (each `PYTHON:ROOT`, e.g. the code before a change and
after) side by side, each in its own process and database, alternating batches of
`--batch` diamonds for `--rounds` rounds, so that the machine's drift (seconds to
minutes) falls on both alike; it reports both totals and the median of the per-round
ratios. Run from the repository root (fresh databases are created and dropped):

  .venv/bin/python bench/hotpath.py --n 300
  .venv/bin/python bench/hotpath.py --compare ../wt-pre/.venv/bin/python:../wt-pre \\
      .venv/bin/python:. --rounds 20 --batch 25
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg

_times: dict[str, list[float]] = defaultdict(list)
_lengths: dict[str, int] = {}
_recording = [False]


_kinds: dict[str, str] = {}


def _kind(sql: str) -> str:
    found = _kinds.get(sql)
    if found is None:
        found = _kinds[sql] = _name(sql)
    return found


def _name(sql: str) -> str:
    words = " ".join(str(sql).split())
    if words.startswith("WITH "):  # name a statement of CTEs by its CTEs
        split = words.split()
        names = [w for w, nxt in itertools.pairwise(split) if nxt == "AS"]
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
            text = query if isinstance(query, str) else query.as_string(self)
            kind = _kind(text)
            _times[kind].append(time.perf_counter() - began)
            _lengths[kind] = len(text)

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


class Runner:
    """One tree's app on a fresh database, running diamonds on request."""

    def __init__(self, pg: str, warmup: int) -> None:
        from bench.diamond_app import TASK_NAME, make_app
        from tasker import TaskRequest

        self.dbname = f"tasker_hot_{uuid.uuid4().hex[:8]}"
        self.admin = psycopg.connect(f"{pg} dbname=postgres", autocommit=True)
        self.admin.execute(f'CREATE DATABASE "{self.dbname}"')
        _patch()
        self.app = make_app(database_url=f"postgresql+psycopg://root@127.0.0.1:5432/{self.dbname}")
        self.app.migrate()
        self.request = TaskRequest(name=TASK_NAME)
        for _ in range(warmup):
            self.app.engine.run_task(self.app.enqueue(self.request).task_id)
        self.backends = {
            int(r[0])
            for r in self.admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.dbname,)
            ).fetchall()
        }

    def run(self, n: int) -> dict[str, Any]:
        """Run `n` diamonds one after the other; their costs (seconds, summed)."""
        _times.clear()
        enq = run = wall = 0.0
        pg_before = _cpu(self.backends)
        _recording[0] = True
        for _ in range(n):
            w0, c0 = time.perf_counter(), time.process_time()
            tid = self.app.enqueue(self.request).task_id
            c1 = time.process_time()
            self.app.engine.run_task(tid)
            c2, w1 = time.process_time(), time.perf_counter()
            enq, run, wall = enq + c1 - c0, run + c2 - c1, wall + w1 - w0
        _recording[0] = False
        if self.app.get_task(tid).status != "complete":
            raise SystemExit(f"task {tid} did not complete")
        return {
            "n": n,
            "enqueue": enq,
            "pass": run,
            "postgres": _cpu(self.backends) - pg_before,
            "wall": wall,
            "statements": {k: v[:] for k, v in _times.items()},
            "lengths": dict(_lengths),
        }

    def close(self) -> None:
        self.app.close()
        self.admin.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        self.admin.close()


def report(got: dict[str, Any], label: str = "") -> None:
    n = got["n"]
    per = {k: got[k] * 1000 / n for k in ("enqueue", "pass", "postgres", "wall")}
    stmts = got["statements"]
    count = sum(len(v) for v in stmts.values())
    print(
        f"{label}CPU ms/task: enqueue {per['enqueue']:.3f}, pass {per['pass']:.3f}, "
        f"postgres {per['postgres']:.3f}; wall ms/task {per['wall']:.3f}; "
        f"statements/task {count / n:.2f}; load average {os.getloadavg()[0]:.2f}"
    )
    print("| statement | per task | chars | median ms |")
    print("|---|---|---|---|")
    for kind, ts in sorted(stmts.items(), key=lambda kv: -sum(kv[1])):
        print(
            f"| {kind} | {len(ts) / n:.2f} | {got['lengths'][kind]} "
            f"| {statistics.median(ts) * 1000:.3f} |"
        )


def serve(root: str, pg: str, warmup: int) -> int:
    """`--serve`: run diamonds for `compare`, one batch per line read ("N"), JSON out."""
    sys.path.insert(0, root)
    runner = Runner(pg, warmup)
    try:
        print("ready", flush=True)
        for line in sys.stdin:
            if not line.strip():
                break
            print(json.dumps(runner.run(int(line))), flush=True)
    finally:
        runner.close()
    return 0


def compare(trees: list[str], rounds: int, batch: int, pg: str, warmup: int) -> int:
    procs = []
    for tree in trees:
        python, root = tree.split(":", 1)
        cmd = [python, str(Path(__file__).resolve()), "--serve", os.path.abspath(root)]
        cmd += ["--pg", pg, "--warmup", str(warmup)]
        proc = subprocess.Popen(
            cmd, cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"{tree} did not start")
        procs.append(proc)
    totals: list[dict[str, Any]] = [{} for _ in trees]
    ratios: dict[str, list[float]] = defaultdict(list)
    keys = ("enqueue", "pass", "postgres", "wall")
    for r in range(rounds):
        order = list(range(len(trees)))
        if r % 2:
            order.reverse()  # neither tree always runs first
        got: list[dict[str, Any]] = [{} for _ in trees]
        for i in order:
            p = procs[i]
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write(f"{batch}\n")
            p.stdin.flush()
            got[i] = json.loads(p.stdout.readline())
        for i, g in enumerate(got):
            t = totals[i]
            t["n"] = t.get("n", 0) + g["n"]
            for k in keys:
                t[k] = t.get(k, 0.0) + g[k]
            stmts = t.setdefault("statements", {})
            for kind, ts in g["statements"].items():
                stmts.setdefault(kind, []).extend(ts)
            t["lengths"] = g["lengths"]
        for k in keys:
            if got[0][k] > 0:
                ratios[k].append(got[-1][k] / got[0][k])
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("\n")
        p.stdin.close()
        p.wait()
    for tree, t in zip(trees, totals, strict=True):
        report(t, f"{tree}\n")
        print()
    print(
        f"{trees[-1]} / {trees[0]}, median of {rounds} paired rounds of {batch}: "
        + ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in ratios.items())
    )
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--pg", default="host=127.0.0.1 port=5432 user=root")
    p.add_argument("--compare", nargs="+", metavar="PYTHON:ROOT")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--batch", type=int, default=25)
    p.add_argument("--serve", metavar="ROOT", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        return serve(args.serve, args.pg, args.warmup)
    if args.compare:
        return compare(args.compare, args.rounds, args.batch, args.pg, args.warmup)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    runner = Runner(args.pg, args.warmup)
    try:
        report(runner.run(args.n))
    finally:
        runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
