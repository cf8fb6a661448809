"""Throughput and latency of diamond tasks (A -> B, C -> D, no-op steps).

Set-ups:
  embedded    SQLite file + in-process broker + `app.start(threads=T)`, all in this process.
  production  PostgreSQL + Redis, W worker processes
              (`python -m tasker worker bench.diamond_app:app --processes 1 --threads T`).
Modes:
  batch       all N tasks enqueued at once, then wait: by K threads (`--submitters K`,
              default 4, as a service's request handlers would), N/K each; K=1: one thread.
  serial      enqueue one, wait until it is complete, then the next.

Reported (after a warm-up of 20 tasks):
- tasks/s and steps/s: N / (last completed_at - first requested_at), from the database;
- enqueue/s: how fast this process submitted;
- p50/p95/max latency: completed_at - requested_at of each task;
- commits per step:
  * tasker: write transactions committed by tasker (`app.db.commits` of this process,
    plus each worker's own count, written on exit; includes the sweeper and warm-up);
  * PostgreSQL: the `pg_stat_database.xact_commit` delta of the benchmark's database
    over the measured run (every committed transaction, read-only ones included),
    minus the benchmark's own queries;
- CPU ms per task of this process, the workers, the PostgreSQL backends serving the
  benchmark's database, and Redis (from /proc).

Backlog (`--backlog F`, production, batch): F x workers x threads tasks at once (10: ten
times more than the workers can take at once), each step sleeping `--step-ms` (200), with
`--sweep-seconds` 1 and `--lease-seconds` 4 for the workers so that a sweeper that re-sends
queued work shows it within a short run; no warm-up. Reported for every production run:
messages per task, every task message sent by any process (enqueue, engine, sweeper) over
the tasks enqueued, and how many of them the sweepers re-sent.

On PostgreSQL the benchmark learns of completed tasks by LISTEN/NOTIFY (a trigger it
adds to its own database), not by polling; on SQLite it polls every 2 ms (serial) or
20 ms (batch). Diagnostics: BENCH_KEEP=1 keeps the database and worker logs,
BENCH_LOG_STATEMENTS=1 logs every statement of the benchmark database in the server
log, --profile DIR writes cProfile stats of every worker. Run from the repository root:
  .venv/bin/python bench/throughput.py --n 1000 --setup both --mode both
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg
import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.diamond_app import TASK_NAME, make_app  # noqa: E402
from tasker import Counts, Tasker, TaskRequest  # noqa: E402

STEPS_PER_TASK = 4
WARMUP = 20
WORKER_CMD = [sys.executable, "-m", "tasker", "-v", "worker", "bench.diamond_app:app"]
NOTIFY_TRIGGER = """
CREATE FUNCTION bench_notify_complete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bench_complete', NEW.task_id::text);
    RETURN NEW;
END $$;
CREATE TRIGGER bench_notify_complete AFTER UPDATE OF status ON tasker_tasks
    FOR EACH ROW WHEN (NEW.status = 'complete' AND OLD.status <> 'complete')
    EXECUTE FUNCTION bench_notify_complete();
"""


@dataclass
class Result:
    setup: str
    mode: str
    n: int
    workers: int
    threads: int
    submitters: int = 1
    wall_s: float = 0.0
    tasks_per_s: float = 0.0
    steps_per_s: float = 0.0
    enqueue_per_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    max_ms: float = 0.0
    cpu_ms_per_task: dict[str, float] = field(default_factory=dict)
    tasker_commits_per_step: float | None = None
    messages_per_task: float | None = None
    sweeper_resent: int | None = None
    pg_xact_commits_per_step: float | None = None
    notes: list[str] = field(default_factory=list)


class Waiter(Protocol):
    def wait(self, ids: list[int]) -> None: ...


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(app: Tasker, n: int, mode: str, result: Result, waiter: Waiter) -> None:
    """Enqueue `n` tasks in `mode` and wait for them; fill in rates and latencies."""
    ids: list[int] = []
    began = time.perf_counter()
    if mode == "batch" and result.submitters > 1:
        k = result.submitters

        def submit(count: int) -> list[int]:
            return [app.enqueue(TaskRequest(name=TASK_NAME)).task_id for _ in range(count)]

        with ThreadPoolExecutor(k) as pool:
            for got in pool.map(submit, [n // k + (i < n % k) for i in range(k)]):
                ids += got
        ids.sort()
    else:
        for _ in range(n):
            ids.append(app.enqueue(TaskRequest(name=TASK_NAME)).task_id)
            if mode == "serial":
                waiter.wait(ids[-1:])
    enqueued = time.perf_counter()
    waiter.wait(ids)
    result.wall_s = round(time.perf_counter() - began, 2)
    result.enqueue_per_s = round(n / (enqueued - began), 1)
    with app.db.read() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT requested_at, completed_at FROM tasker_tasks"
                " WHERE task_id >= :lo AND task_id <= :hi"
            ),
            {"lo": ids[0], "hi": ids[-1]},
        ).all()
    times = [(_ts(r[0]), _ts(r[1])) for r in rows]
    span = max(t[1] for t in times) - min(t[0] for t in times)
    latencies = [(t[1] - t[0]) * 1000 for t in times]
    result.tasks_per_s = round(n / span, 1)
    result.steps_per_s = round(n * STEPS_PER_TASK / span, 1)
    result.p50_ms = round(statistics.median(latencies), 1)
    result.p95_ms = round(percentile(latencies, 0.95), 1)
    result.max_ms = round(max(latencies), 1)


def _ts(value: Any) -> float:
    if isinstance(value, str):  # SQLite returns text
        value = datetime.fromisoformat(value)
    return float(value.timestamp())


# -- CPU accounting -------------------------------------------------------------------


def cpu_times() -> dict[int, tuple[str, float]]:
    """(command name, CPU seconds used so far) of every process."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rindex(")") + 2 :].split()
            used = (int(fields[11]) + int(fields[12])) / tick
            found[int(entry)] = (raw[raw.index("(") + 1 : raw.rindex(")")], used)
    return found


def cpu_per_task(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    n: int,
    workers: list[int],
    backends: set[int],
) -> dict[str, float]:
    """CPU ms per task of: this process, the workers, our PostgreSQL backends, Redis."""
    out = {"bench": 0.0, "workers": 0.0, "postgres": 0.0, "redis": 0.0}
    for pid, (comm, used) in after.items():
        spent = used - before.get(pid, (comm, 0.0))[1]
        if pid == os.getpid():
            out["bench"] += spent
        elif pid in workers:
            out["workers"] += spent
        elif pid in backends:
            out["postgres"] += spent
        elif comm.startswith("redis-server"):
            out["redis"] += spent
    return {k: round(v * 1000 / n, 2) for k, v in out.items()}


# -- embedded --------------------------------------------------------------------------


class SqlitePolls:
    """Waits by polling the app's database (nothing like NOTIFY on SQLite)."""

    def __init__(self, app: Tasker) -> None:
        self.app = app

    def wait(self, ids: list[int]) -> None:
        pause = 0.002 if len(ids) == 1 else 0.02
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            with self.app.db.read() as conn:
                done = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM tasker_tasks WHERE status = 'complete'"
                        " AND task_id >= :lo AND task_id <= :hi"
                    ),
                    {"lo": ids[0], "hi": ids[-1]},
                ).scalar()
            if done == len(ids):
                return
            time.sleep(pause)
        raise SystemExit(f"tasks {ids[0]}..{ids[-1]} did not complete within 10 minutes")


def run_embedded(n: int, mode: str, threads: int, submitters: int) -> Result:
    result = Result("embedded (SQLite + in-process broker)", mode, n, 1, threads, submitters)
    folder = tempfile.mkdtemp(prefix="tasker-bench-")
    try:
        app = make_app(database_url=f"sqlite:///{folder}/bench.db")
        app.migrate()
        app.start(threads=threads)
        try:
            waiter = SqlitePolls(app)
            warm_up(app, waiter)
            before = app.db.commits
            cpu_before = cpu_times()
            measure(app, n, mode, result, waiter)
            result.cpu_ms_per_task = cpu_per_task(cpu_before, cpu_times(), n, [], set())
            result.tasker_commits_per_step = round(
                (app.db.commits - before) / (n * STEPS_PER_TASK), 2
            )
            result.notes.append("tasker commits: app.db.commits of the one process")
        finally:
            app.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def warm_up(app: Tasker, waiter: Waiter) -> None:
    waiter.wait([app.enqueue(TaskRequest(name=TASK_NAME)).task_id for _ in range(WARMUP)])


# -- production ------------------------------------------------------------------------


class Listener:
    """Waits for tasks to complete through LISTEN/NOTIFY; also reads the statistics.

    Every statement it runs is one transaction in `xact_commit`: `count` says how many.
    """

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("LISTEN bench_complete")
        self.count = 1
        self.seen: set[int] = set()

    def wait(self, ids: list[int]) -> None:
        missing = set(ids) - self.seen
        deadline = time.monotonic() + 600
        while missing:
            for note in self.conn.notifies(timeout=2.0, stop_after=len(missing)):
                self.seen.add(int(note.payload))
                missing.discard(int(note.payload))
            if missing:  # a quiet spell: make sure nothing was missed
                self.count += 1
                rows = self.conn.execute(
                    "SELECT task_id FROM tasker_tasks WHERE status = 'complete'"
                    " AND task_id = ANY(%s)",
                    (list(missing),),
                ).fetchall()
                missing -= {int(r[0]) for r in rows}
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(missing)} task(s) did not complete within 10 minutes")

    def query(self, sql: str, params: Any = ()) -> list[Any]:
        self.count += 1
        return self.conn.execute(sql, params).fetchall()

    def backends(self, dbname: str) -> set[int]:
        """The PostgreSQL backends connected to the database now (this one included)."""
        rows = self.query("SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,))
        return {int(r[0]) for r in rows}

    def xact_commit(self, dbname: str) -> int:
        """The database's committed transactions, once every backend has flushed its stats."""
        sql = "SELECT xact_commit FROM pg_stat_database WHERE datname = %s"
        last, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            value = int(self.query(sql, (dbname,))[0][0])
            if value - last > 3:  # still moving (beyond our own reads and a sweep)
                last, stable_since = value, time.monotonic()
            elif time.monotonic() - stable_since > 2.5:
                return value
            time.sleep(0.5)
        return last


@dataclass
class Production:
    app: Tasker
    listener: Listener
    dbname: str
    folder: Path
    procs: list[subprocess.Popen[bytes]]


@contextmanager
def production_env(
    pg: str, redis_url: str, workers: int, threads: int, extra_env: dict[str, str]
) -> Iterator[Production]:
    dbname = f"tasker_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(f"{pg} dbname=postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{dbname}"')
    if os.environ.get("BENCH_LOG_STATEMENTS"):  # diagnosis: every statement in the server log
        admin.execute(f"ALTER DATABASE \"{dbname}\" SET log_statement = 'all'")
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    folder = Path(tempfile.mkdtemp(prefix="tasker-bench-"))
    url = f"postgresql+psycopg://{_pg_userhost(pg)}/{dbname}"
    procs: list[subprocess.Popen[bytes]] = []
    app = make_app(database_url=url, broker_url=redis_url)
    listener: Listener | None = None
    try:
        app.migrate()
        with psycopg.connect(f"{pg} dbname={dbname}", autocommit=True) as conn:
            conn.execute(NOTIFY_TRIGGER)
        listener = Listener(f"{pg} dbname={dbname}")
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TASKER_DATABASE_URL": url,
            "TASKER_BROKER_URL": redis_url,
            "BENCH_STATS_DIR": str(folder),
            **extra_env,
        }
        for i in range(workers):
            with (folder / f"worker-{i}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [*WORKER_CMD, "--processes", "1", "--threads", str(threads)],
                        env=env,
                        cwd=ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + 30
        for i in range(workers):
            while " thread(s) on " not in (folder / f"worker-{i}.log").read_text():
                if time.monotonic() > deadline or procs[i].poll() is not None:
                    raise SystemExit(f"worker {i} did not start:\n" + _logs(folder))
                time.sleep(0.05)
        yield Production(app, listener, dbname, folder, procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if listener is not None:
            listener.conn.close()
        app.close()
        r.flushdb()
        r.close()
        if not os.environ.get("BENCH_KEEP"):
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            shutil.rmtree(folder, ignore_errors=True)
        admin.close()


def _pg_userhost(pg: str) -> str:
    parts = dict(p.split("=", 1) for p in pg.split())
    user = parts.get("user", "root")
    return f"{user}@{parts.get('host', '127.0.0.1')}:{parts.get('port', '5432')}"


def _logs(folder: Path) -> str:
    return "\n".join(p.read_text()[-2000:] for p in sorted(folder.glob("worker-*.log")))


def run_production(
    n: int,
    mode: str,
    workers: int,
    threads: int,
    submitters: int,
    pg: str,
    redis_url: str,
    profile: str | None,
    backlog: dict[str, str] | None = None,
) -> Result:
    setup = "production (PostgreSQL + Redis)" + (", backlog" if backlog else "")
    result = Result(setup, mode, n, workers, threads, submitters)
    extra = {"BENCH_PROFILE_DIR": profile} if profile else {}
    extra.update(backlog or {})
    warmup = 0 if backlog else WARMUP
    with production_env(pg, redis_url, workers, threads, extra) as env:
        app, listener, db = env.app, env.listener, env.dbname
        sent = app.observe(Counts())  # the messages this process sends
        if warmup:
            warm_up(app, listener)
        xact_before = listener.xact_commit(db)
        own_before = listener.count
        backends = listener.backends(db)
        cpu_before = cpu_times()
        measure(app, n, mode, result, listener)
        cpu_after = cpu_times()
        backends |= listener.backends(db)  # the pools may have opened connections meanwhile
        result.cpu_ms_per_task = cpu_per_task(
            cpu_before, cpu_after, n, [p.pid for p in env.procs], backends
        )
        xact_after = listener.xact_commit(db)
        own = listener.count - own_before
        result.pg_xact_commits_per_step = round(
            (xact_after - xact_before - own) / (n * STEPS_PER_TASK), 2
        )
        swept = listener.query("SELECT count(*) FROM tasker_tasks WHERE dispatched_at IS NOT NULL")[
            0
        ][0]
        if swept:
            result.notes.append(f"{swept} task(s) were re-sent by the sweeper")
        for proc in env.procs:  # stop the workers: each writes its commit count on exit
            proc.send_signal(signal.SIGTERM)
        for proc in env.procs:
            proc.wait(timeout=60)
        reports = list(env.folder.glob("commits-*.json"))
        if len(reports) != workers:
            result.notes.append(f"only {len(reports)} of {workers} workers reported commits")
        stats = [json.loads(f.read_text()) for f in reports]
        worker_commits = sum(r["commits"] for r in stats)
        result.tasker_commits_per_step = round(
            (worker_commits + app.db.commits) / ((n + warmup) * STEPS_PER_TASK), 2
        )
        messages = sum(r.get("messages", 0) for r in stats) + sent.messages
        result.messages_per_task = round(messages / (n + warmup), 3)
        resent = [r.get("resent") for r in stats]
        if all(isinstance(x, int) for x in resent):
            result.sweeper_resent = sum(resent)
    return result


# -- main --------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    head = (
        "| set-up | mode | N | procs x threads | submitters | tasks/s | steps/s | enqueue/s "
        "| p50 ms "
        "| p95 ms | max ms | tasker commits/step | PG xact_commit/step | messages/task "
        "| CPU ms/task |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        cpu = ", ".join(f"{k} {v:g}" for k, v in r.cpu_ms_per_task.items() if v) or "-"
        xact = "-" if r.pg_xact_commits_per_step is None else r.pg_xact_commits_per_step
        lines.append(
            f"| {r.setup} | {r.mode} | {r.n} | {r.workers} x {r.threads} | {r.submitters} "
            f"| {r.tasks_per_s} "
            f"| {r.steps_per_s} | {r.enqueue_per_s} | {r.p50_ms} | {r.p95_ms} | {r.max_ms} "
            f"| {r.tasker_commits_per_step} | {xact} | {r.messages_per_task or '-'} | {cpu} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--mode", choices=["batch", "serial", "both"], default="both")
    p.add_argument("--setup", choices=["embedded", "production", "both"], default="both")
    p.add_argument("--workers", type=int, default=2, help="worker processes (production)")
    p.add_argument("--threads", type=int, default=8, help="worker threads per process")
    p.add_argument(
        "--submitters", type=int, default=4, help="threads enqueueing in batch mode (default 4)"
    )
    p.add_argument("--pg", default="host=127.0.0.1 port=5432 user=root")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    p.add_argument("--profile", help="folder: cProfile every worker thread, dump stats there")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument(
        "--backlog",
        type=int,
        metavar="F",
        help="production batch run of F x workers x threads slow tasks (see above)",
    )
    p.add_argument("--step-ms", type=float, default=200.0, help="with --backlog: step time")
    p.add_argument("--sweep-seconds", type=float, default=1.0, help="with --backlog")
    p.add_argument("--lease-seconds", type=float, default=4.0, help="with --backlog")
    args = p.parse_args(argv)
    if args.profile:
        args.profile = os.path.abspath(args.profile)
        os.makedirs(args.profile, exist_ok=True)
        os.environ["BENCH_PROFILE_DIR"] = args.profile  # the embedded set-up profiles itself

    if args.backlog:
        r = run_production(
            args.backlog * args.workers * args.threads,
            "batch",
            args.workers,
            args.threads,
            args.submitters,
            args.pg,
            args.redis_url,
            args.profile,
            backlog={
                "BENCH_STEP_SECONDS": str(args.step_ms / 1000),
                "TASKER_SWEEP_SECONDS": str(args.sweep_seconds),
                "TASKER_LEASE_SECONDS": str(args.lease_seconds),
            },
        )
        print(json.dumps(asdict(r)), flush=True)
        print()
        print(table([r]))
        if args.json:
            Path(args.json).write_text(json.dumps([asdict(r)], indent=2))
        return 0
    modes = ["batch", "serial"] if args.mode == "both" else [args.mode]
    setups = ["embedded", "production"] if args.setup == "both" else [args.setup]
    results = []
    for setup in setups:
        for mode in modes:
            submitters = args.submitters if mode == "batch" else 1
            if setup == "embedded":
                r = run_embedded(args.n, mode, args.threads, submitters)
            else:
                r = run_production(
                    args.n,
                    mode,
                    args.workers,
                    args.threads,
                    submitters,
                    args.pg,
                    args.redis_url,
                    args.profile,
                )
            print(json.dumps(asdict(r)), flush=True)
            results.append(r)
    print()
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
