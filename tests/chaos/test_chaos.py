"""Chaos: kill workers, wipe Redis and restart PostgreSQL while diamonds run; lose nothing.

240 diamond tasks (A -> B, C -> D, then E, a transactional step) are enqueued over ~20 s
while three real worker processes (`tasker worker ... --processes 1`, owned by the test)
run them with a 3 s lease and a 0.5 s sweep. Meanwhile the test SIGKILLs a worker
(preferably one with a step in flight) every 1-2 s and starts a replacement, FLUSHDBs the
broker's Redis db once and restarts PostgreSQL once. Then it waits for every task to
complete and checks, from the handlers' own log of every execution (see `chaos_app.py`):

- every task and every step is `complete`, no lease is held, attempts <= retry_limit;
- executions of one step never overlap: each starts after the previous one ended, where
  an execution without an end belongs to a killed worker and ended by its kill time
  (any other open execution fails the test);
- an execution cut short by a kill is followed by the next attempt only after the
  killed worker's lease had expired (its start transaction's time + lease_seconds);
- attempt numbers of one step's executions are distinct, none above the step's attempt
  count; the stored results come from the last attempt, which logged its end;
- B and C only ever ran after A's recorded execution ended, D after B's and C's, E after D's;
- exactly once: the user table E writes in its step's transaction (`chaos_ledger`) has
  exactly one row per task, from the attempt recorded complete;
- a few `chaos_items` tasks, fed among the diamonds, run a for_each step over 50
  items: every item ends complete, no item's runs overlap (as for steps), its attempts
  stay within the retry limit and its stored results come from its last, finished run,
  and the step's results list every item's, in order;
- a few `chaos_sleeper` tasks, fed among the diamonds, sleep (`wait=`, `after=`) and
  reattempt through the chaos: each completes, none of its steps ran twice at once or
  before its due time, and its reattempts were counted apart from its attempts (checked
  by `journeys_checks.py`).

`CHAOS_PG_RESTART=0` leaves PostgreSQL running (on a server others share); the default
restarts it. `CHAOS_REDIS_DB` is the Redis db the broker uses (default 13; flushed before
and after).

Counts are printed (and repeated in the terminal summary). Set CHAOS_SEED to replay
the random choices.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from tasker import TaskRequest
from tasker.engine.keeping import EXIT_LEASE_LOST

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.redis]

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import chaos_app  # noqa: E402
from journeys_checks import check_sleepers  # noqa: E402
from services_support import flushed_redis, kill_group, start_worker  # noqa: E402

PG = "host=127.0.0.1 port=5432 user=root"
REDIS_DB = int(os.environ.get("CHAOS_REDIS_DB", "13"))
BROKER_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
QUEUE_KEY = "dramatiq:tasker"

N_TASKS = 240
ITEM_EVERY = 40  # a chaos_items task is fed after every 40th diamond
N_ITEM_TASKS = N_TASKS // ITEM_EVERY
SLEEPER_EVERY = 20  # a chaos_sleeper task is fed after every 20th diamond
N_SLEEPERS = N_TASKS // SLEEPER_EVERY
RESTART_PG = os.environ.get("CHAOS_PG_RESTART", "1") != "0"
WORKERS = 3
THREADS = 4
LEASE_SECONDS = 3.0
SWEEP_SECONDS = 0.5
FEED_SECONDS = 20.0  # tasks are enqueued over this long
CHAOS_SECONDS = 30.0  # workers are killed during this long
FLUSH_AT = 7.0  # seconds into the chaos: a burst of tasks is enqueued, then Redis is wiped
BURST = 60
PG_RESTART_AT = 14.0  # seconds into the chaos: restart PostgreSQL
DEADLINE = 240.0  # for every task to complete once the chaos stops


# -- services ------------------------------------------------------------------------


def _connect(dbname: str, timeout: float = 30.0) -> psycopg.Connection[Any]:
    """An autocommit connection, retried while PostgreSQL restarts."""
    give_up = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(f"{PG} dbname={dbname}", autocommit=True, connect_timeout=3)
        except psycopg.OperationalError as exc:
            if time.monotonic() > give_up:
                pytest.fail(
                    f"PostgreSQL is not reachable on 127.0.0.1:5432 ({exc}); the chaos test "
                    "needs it: start it with scripts/services",
                    pytrace=False,
                )
            time.sleep(0.2)


def _pg_cluster() -> list[str]:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions:
        pytest.fail("cannot restart PostgreSQL: no cluster under /etc/postgresql", pytrace=False)
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main"]


class Sql:
    """Queries on the test database that survive the PostgreSQL restart."""

    def __init__(self, dbname: str) -> None:
        self.dbname = dbname
        self.conn = _connect(dbname, timeout=5)

    def __call__(self, query: str, params: Any = None) -> list[Any]:
        give_up = time.monotonic() + 30
        while True:
            try:
                cur = self.conn.execute(query, params)
                return cur.fetchall() if cur.description else []
            except psycopg.OperationalError:
                if time.monotonic() > give_up:
                    raise
                self.conn.close()
                time.sleep(0.2)
                self.conn = _connect(self.dbname)

    def close(self) -> None:
        self.conn.close()


@contextmanager
def database() -> Iterator[str]:
    name = f"tasker_chaos_{uuid.uuid4().hex[:10]}"
    with _connect("postgres", timeout=3) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        _ensure_postgres()
        if not os.environ.get("CHAOS_KEEP_DB"):
            with _connect("postgres") as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _ensure_postgres() -> None:
    """Leave PostgreSQL running, whatever happened to the restart."""
    try:
        psycopg.connect(f"{PG} dbname=postgres", connect_timeout=3).close()
    except psycopg.OperationalError:
        subprocess.run([*_pg_cluster(), "start"], check=False, timeout=60)


def broker() -> contextlib.AbstractContextManager[redis.Redis]:
    """Redis db `REDIS_DB`, flushed before and after the test."""
    return flushed_redis(REDIS_DB, "the chaos test needs")


# -- worker processes ----------------------------------------------------------------


class Pool:
    """The worker processes: started, killed, replaced; all gone after the test."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.live: list[subprocess.Popen[bytes]] = []
        self.all: list[subprocess.Popen[bytes]] = []
        self.killed: dict[int, float] = {}  # pid -> time.time() once it was surely dead
        self.crashed: dict[int, tuple[int, str]] = {}  # pid -> (exit code, end of its log)
        self.logs: dict[int, Path] = {}

    def start(self) -> subprocess.Popen[bytes]:
        log = self.folder / f"worker-{len(self.all):03d}.log"
        proc = start_worker("chaos_app:make_app", THREADS, self.folder, self.env, log)
        self.live.append(proc)
        self.all.append(proc)
        self.logs[proc.pid] = log
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self.killed[proc.pid] = time.time()
        self.live.remove(proc)

    def replace_crashed(self) -> None:
        """Workers that died on their own are noted and replaced (like the supervisor)."""
        for proc in list(self.live):
            if proc.poll() is not None:
                log = self.logs[proc.pid].read_text(errors="replace")
                self.crashed[proc.pid] = (proc.returncode, log[-600:])
                self.live.remove(proc)
                self.start()

    def ready(self, pid: int) -> bool:
        """Whether the worker got as far as running (it logs its start)."""
        return " thread(s) on " in self.logs[pid].read_text(errors="replace")

    def stop(self, timeout: float = 40.0) -> dict[int, int | None]:
        for proc in self.live:
            proc.send_signal(signal.SIGTERM)
        codes: dict[int, int | None] = {}
        for proc in self.live:
            try:
                codes[proc.pid] = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                codes[proc.pid] = None
        self.live = []
        return codes

    def cleanup(self) -> None:
        for proc in self.all:
            kill_group(proc)

    def output(self, last: int = 4) -> str:
        logs = sorted(self.folder.glob("worker-*.log"))[-last:]
        return "\n".join(
            f"--- {p.name} (last 2500 chars) ---\n{p.read_text(errors='replace')[-2500:]}"
            for p in logs
        )


# -- executions ----------------------------------------------------------------------


@dataclass
class Execution:
    execution_id: str
    task_id: int
    step: str
    pid: int
    attempt: int
    started_at: float
    ended_at: float | None  # logged (or journaled) end
    reattempts: int = 0  # the step's reattempts when this execution started
    end: float | None = None  # the end used by the checks (a kill time if it had none)
    killed: bool = False  # cut short by a SIGKILL
    journaled: bool = False  # a log write failed (PostgreSQL was away): the attempt failed


def load_executions(sql: Sql, journal_dir: Path, killed: dict[int, float]) -> list[Execution]:
    rows = sql(
        "SELECT execution_id, task_id, step, pid, attempt, started_at, ended_at, reattempts"
        " FROM chaos_log"
    )
    found = {r[0]: Execution(*r) for r in rows}
    for path in journal_dir.glob("journal-*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: the kill time bounds that execution
            known = found.get(rec["execution_id"])
            if known is None:  # its start was never logged
                known = found[rec["execution_id"]] = Execution(**rec)
            else:  # keep the later end: the write may have landed after all
                known.ended_at = max(known.ended_at or 0.0, rec["ended_at"])
            known.journaled = True
    for e in found.values():
        if e.ended_at is not None:
            e.end = e.ended_at
        elif e.pid in killed and killed[e.pid] >= e.started_at:
            e.end, e.killed = killed[e.pid], True
    return list(found.values())


def wait_until(cond: Callable[[], bool], timeout: float, what: str, pool: Pool) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        pool.replace_crashed()
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{pool.output()}")
        time.sleep(0.25)


# -- the test ------------------------------------------------------------------------


def test_chaos_loses_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    # The services are set up inside the test, so that unreachable ones FAIL it.
    with database() as name, broker() as r:
        summary = run_chaos(tmp_path, name, r)
    with capsys.disabled():
        print("\n" + summary)
    request.config.chaos_summary = summary  # type: ignore[attr-defined]


def run_chaos(tmp_path: Path, database: str, broker: redis.Redis) -> str:
    """The whole scenario and its checks; returns the printed summary."""
    seed = int(os.environ.get("CHAOS_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    url = f"postgresql+psycopg://root@127.0.0.1:5432/{database}"
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "TASKER_DATABASE_URL": url,
        "TASKER_BROKER_URL": BROKER_URL,
        "TASKER_LEASE_SECONDS": str(LEASE_SECONDS),
        "TASKER_SWEEP_SECONDS": str(SWEEP_SECONDS),
        "TASKER_BACKOFF_BASE": "0.2",
        "TASKER_BACKOFF_MAX": "2",
        "CHAOS_LOG_DSN": f"{PG} dbname={database}",
        "CHAOS_JOURNAL_DIR": str(journal_dir),
    }
    app = chaos_app.make_app(
        database_url=url,
        broker_url=BROKER_URL,
        lease_seconds=LEASE_SECONDS,
        sweep_seconds=SWEEP_SECONDS,
    )
    app.migrate()
    sql = Sql(database)
    sql(chaos_app.LOG_TABLE)
    sql(chaos_app.LEDGER_TABLE)
    pool = Pool(tmp_path, env)
    stop_feeding = threading.Event()
    fed: list[int] = []
    fed_items: list[int] = []
    fed_sleepers: list[int] = []
    feed_errors: list[BaseException] = []

    # When each task is enqueued (seconds into the chaos): spread over FEED_SECONDS, but
    # a burst of BURST at FLUSH_AT, so the queue holds messages when Redis is wiped.
    spread = N_TASKS - BURST
    schedule = sorted([FEED_SECONDS * i / spread for i in range(spread)] + [FLUSH_AT] * BURST)
    burst_sent = threading.Event()

    def feed() -> None:
        """Enqueue the tasks on schedule; retried through the outage (idempotently)."""
        try:
            for i, at in enumerate(schedule):
                if at > FLUSH_AT and not burst_sent.is_set():
                    burst_sent.set()
                stop_feeding.wait(max(0.0, began + at - time.monotonic()))
                give_up = time.monotonic() + 60
                while not stop_feeding.is_set():
                    try:
                        # A retry after a failed enqueue sends all three again (idempotently).
                        request_ = TaskRequest(
                            name="chaos_diamond", context={"i": i}, idempotency_key=f"chaos-{i}"
                        )
                        _note(fed, app.enqueue(request_).task_id)
                        if i % ITEM_EVERY == 0:
                            key = f"chaos-items-{i}"
                            items_ = TaskRequest(name="chaos_items", idempotency_key=key)
                            _note(fed_items, app.enqueue(items_).task_id)
                        if i % SLEEPER_EVERY == 0:
                            key = f"chaos-sleeper-{i}"
                            sleeper = TaskRequest(name="chaos_sleeper", idempotency_key=key)
                            _note(fed_sleepers, app.enqueue(sleeper).task_id)
                        break
                    except Exception:
                        if time.monotonic() > give_up:
                            raise
                        time.sleep(0.2)
        except BaseException as exc:
            feed_errors.append(exc)

    restart: dict[str, Any] = {}

    def restart_postgres() -> None:
        restart["began"] = time.time()
        done = subprocess.run([*_pg_cluster(), "restart"], capture_output=True, timeout=120)
        restart["ended"] = time.time()
        restart["rc"] = done.returncode
        restart["output"] = (done.stdout + done.stderr).decode(errors="replace")

    feeder = threading.Thread(target=feed, name="chaos-feeder", daemon=True)
    restarter = threading.Thread(target=restart_postgres, name="chaos-pg-restart", daemon=True)
    flushed = {"at": 0.0, "lost": 0}
    try:
        for _ in range(WORKERS):
            pool.start()
        began = time.monotonic()
        wall_began = time.time()
        feeder.start()

        # -- chaos ---------------------------------------------------------------------
        next_kill = began + rng.uniform(1.0, 2.0)
        while (elapsed := time.monotonic() - began) < CHAOS_SECONDS:
            pool.replace_crashed()
            if not flushed["at"] and burst_sent.is_set():
                flushed["lost"] = int(broker.llen(QUEUE_KEY) + broker.llen(f"{QUEUE_KEY}.DQ"))
                broker.flushdb()
                flushed["at"] = time.time()
            if (
                RESTART_PG
                and not restarter.is_alive()
                and "began" not in restart
                and elapsed >= PG_RESTART_AT
            ):
                restarter.start()
            if time.monotonic() >= next_kill:
                pool.kill(pick_victim(pool, sql, rng, restarter.is_alive()))
                pool.start()
                next_kill = time.monotonic() + rng.uniform(1.0, 2.0)
            time.sleep(0.05)
        if RESTART_PG:
            restarter.join(120)
        feeder.join(60)
        assert not feed_errors, f"enqueueing failed: {feed_errors!r}"
        assert not RESTART_PG or restart.get("rc") == 0, f"PostgreSQL restart failed: {restart}"
        assert len(set(fed)) == N_TASKS, f"only {len(set(fed))} of {N_TASKS} tasks enqueued"
        assert flushed["lost"] > 0, "the Redis queue was empty when it was wiped"
        chaos_ended = time.time()

        # -- recovery --------------------------------------------------------------------
        def all_complete() -> bool:
            rows = sql("SELECT count(*) FROM tasker_tasks WHERE status = 'complete'")
            return rows[0][0] == N_TASKS + N_ITEM_TASKS + N_SLEEPERS

        try:
            what = f"all {N_TASKS} + {N_ITEM_TASKS} + {N_SLEEPERS} tasks"
            wait_until(all_complete, DEADLINE, what, pool)
        except BaseException:
            print(sql("SELECT status, count(*) FROM tasker_tasks GROUP BY status"))
            raise
        recovered = time.time()
        codes = pool.stop()
        wall = time.time() - wall_began
        # A worker still starting up (no signal handler yet) dies of the SIGTERM: fine.
        bad = {
            pid: code
            for pid, code in codes.items()
            if code != 0 and not (code == -signal.SIGTERM and not pool.ready(pid))
        }
        assert not bad, f"graceful stop exit codes: {codes}\n{pool.output()}"

        # -- checks ----------------------------------------------------------------------
        counts = check(sql, journal_dir, pool, fed)
        counts.update(check_items(sql, journal_dir, pool, fed_items))
        executions = load_executions(sql, journal_dir, pool.killed)
        counts.update(check_sleepers(sql, executions, fed_sleepers, LEASE_SECONDS))
    finally:
        stop_feeding.set()
        pool.cleanup()
        _ensure_postgres()
        sql.close()
        app.close()

    # A worker started while PostgreSQL is down exits at once (`tasker worker` migrates
    # first), and one whose lease could not be renewed while a step ran fail-stops with
    # EXIT_LEASE_LOST (so its attempt cannot overlap a new owner's): a supervisor restarts
    # either, as the pool does. Any other death is a failure.
    unexpected = {
        pid: c
        for pid, c in pool.crashed.items()
        if not (c[0] == 2 and "error: database: connection failed" in c[1])
        and not (c[0] == EXIT_LEASE_LOST and "no step runs twice at once" in c[1])
    }
    fail_stopped = sum(1 for c in pool.crashed.values() if c[0] == EXIT_LEASE_LOST)
    counts.update(
        seed=seed,
        wall_s=round(wall, 1),
        recovery_after_chaos_s=round(recovered - chaos_ended, 1),
        killed_workers=len(pool.killed),
        workers_died_at_start_in_outage=len(pool.crashed) - len(unexpected) - fail_stopped,
        workers_fail_stopped=fail_stopped,
        redis_messages_wiped=flushed["lost"],
        pg_restart_s=round(restart["ended"] - restart["began"], 1) if RESTART_PG else None,
    )
    assert not unexpected, f"workers died on their own: {unexpected}\n{pool.output()}"
    return "chaos: " + ", ".join(f"{k}={v}" for k, v in counts.items())


def _note(ids: list[int], task_id: int) -> None:
    """Add an enqueued task's id once (an idempotent enqueue again returns the same)."""
    if task_id not in ids:
        ids.append(task_id)


def pick_victim(pool: Pool, sql: Sql, rng: random.Random, pg_down: bool) -> subprocess.Popen[bytes]:
    """A live worker, preferably one running a step right now."""
    busy: set[int] = set()
    if not pg_down:
        try:
            rows = sql.conn.execute(
                "SELECT DISTINCT pid FROM chaos_log WHERE ended_at IS NULL"
                " AND started_at > extract(epoch FROM clock_timestamp()) - 1"
            ).fetchall()
            busy = {r[0] for r in rows}
        except psycopg.Error:
            pass
    candidates = [p for p in pool.live if p.pid in busy] or pool.live
    return rng.choice(candidates)


def step_history(sql: Sql, task_id: int, name: str) -> list[tuple[Any, ...]]:
    """The step's transitions: (from, to, attempt, reason, created_at as epoch)."""
    return sql(
        """SELECT t.from_status, t.to_status, t.attempt, t.reason,
                  extract(epoch FROM t.created_at)::float
             FROM tasker_workflow_step_transitions t
             JOIN tasker_workflow_steps s USING (workflow_step_id)
             JOIN tasker_named_steps n USING (named_step_id)
            WHERE t.task_id = %s AND n.name = %s
            ORDER BY t.transition_id""",
        (task_id, name),
    )


def check(sql: Sql, journal_dir: Path, pool: Pool, fed: list[int]) -> dict[str, Any]:
    """All the assertions on the final state and the execution log; returns the counts."""
    tasks = sql(
        "SELECT task_id, status, lease_owner, completed_at FROM tasker_tasks"
        " WHERE task_id = ANY(%s)",
        (fed,),
    )
    assert len(tasks) == N_TASKS
    assert {t[0] for t in tasks} == set(fed)
    assert Counter(t[1] for t in tasks) == {"complete": N_TASKS}
    assert [t for t in tasks if t[2] is not None] == [], "leases left held"
    assert all(t[3] is not None for t in tasks)

    steps = sql(
        """SELECT s.task_id, n.name, s.status, s.attempts, s.retry_limit, s.results
             FROM tasker_workflow_steps s JOIN tasker_named_steps n USING (named_step_id)
            WHERE s.task_id = ANY(%s)""",
        (fed,),
    )
    assert len(steps) == len(chaos_app.ChaosDiamond.step_templates) * N_TASKS
    bad = [s for s in steps if s[2] != "complete"]
    assert not bad, f"steps not complete: {bad[:10]}"
    over = [s for s in steps if s[3] > s[4] or s[4] != chaos_app.RETRY_LIMIT]
    assert not over, f"attempts above retry_limit: {over[:10]}"
    step = {(s[0], s[1]): s for s in steps}

    # When each attempt was started (the transaction that renewed the lease for it).
    started_tx = {
        (r[0], r[1], r[2]): r[3].timestamp()
        for r in sql(
            """SELECT t.task_id, n.name, t.attempt, t.created_at
                 FROM tasker_workflow_step_transitions t
                 JOIN tasker_workflow_steps s USING (workflow_step_id)
                 JOIN tasker_named_steps n USING (named_step_id)
                WHERE t.to_status = 'in_progress'"""
        )
    }

    diamonds = set(fed)
    executions = [
        e for e in load_executions(sql, journal_dir, pool.killed) if e.task_id in diamonds
    ]
    unexplained = [e for e in executions if e.end is None]
    assert not unexplained, f"executions with no end whose worker was not killed: {unexplained}"
    by_step: dict[tuple[int, str], list[Execution]] = defaultdict(list)
    for e in executions:
        by_step[(e.task_id, e.step)].append(e)

    problems: list[str] = []
    margins: list[float] = []  # how long after the killed owner's lease expired a retry began
    for key, runs in by_step.items():
        runs.sort(key=lambda e: e.started_at)
        _, _, _, attempts, _, results = step[key]
        numbers = [e.attempt for e in runs]
        if len(set(numbers)) != len(numbers) or max(numbers) > attempts:
            problems.append(f"{key}: attempt numbers {numbers}, attempts {attempts}")
        for prev, nxt in itertools.pairwise(runs):
            assert prev.end is not None
            if nxt.started_at < prev.end:
                problems.append(
                    f"{key}: overlapping executions {prev} and {nxt}"
                    f"; transitions {step_history(sql, *key)}"
                )
            if prev.killed:
                began = started_tx.get((*key, prev.attempt))
                if began is None:
                    problems.append(f"{key}: no 'in_progress' transition for {prev}")
                    continue
                margins.append(nxt.started_at - (began + LEASE_SECONDS))
                if margins[-1] < -0.001:
                    problems.append(
                        f"{key}: {nxt} started before the lease of {prev} expired"
                        f"; transitions {step_history(sql, *key)}"
                    )
        final = {e.execution_id: e for e in runs}.get(results["execution_id"])
        if final is None or final.ended_at is None or results["attempt"] != attempts:
            problems.append(
                f"{key}: results {results} are not from a finished last attempt"
                f" (attempts {attempts}); executions {runs}"
                f"; transitions {step_history(sql, *key)}"
            )
    by_id = {e.execution_id: e for e in executions}
    after = {"B": ["A"], "C": ["A"], "D": ["B", "C"], "E": ["D"]}
    for task_id in fed:
        for s_name, deps in after.items():
            first = min((e.started_at for e in by_step[(task_id, s_name)]), default=None)
            for d in deps:
                recorded = by_id.get(step[(task_id, d)][5]["execution_id"])
                if first is None or recorded is None or recorded.ended_at is None:
                    problems.append(f"task {task_id}: no logged execution of {s_name} or {d}")
                elif first < recorded.ended_at:
                    problems.append(f"task {task_id}: {s_name} ran before {d} had finished")
    assert not problems, "\n".join(problems[:30])

    # Exactly once: one ledger row per (task, transactional step), from its recorded attempt.
    ledger = sql("SELECT task_id, step, attempt FROM chaos_ledger")
    per_key = Counter((r[0], r[1]) for r in ledger)
    assert per_key == {(t, "E"): 1 for t in fed}, (
        f"ledger rows per (task, step) not exactly one: "
        f"{[(k, n) for k, n in per_key.items() if n != 1][:10]}, "
        f"missing {[t for t in fed if (t, 'E') not in per_key][:10]}"
    )
    wrong = [r for r in ledger if r[2] != step[(r[0], r[1])][3]]
    assert not wrong, f"ledger rows not from the attempt recorded complete: {wrong[:10]}"

    attempts_total = sum(s[3] for s in steps)
    return {
        "tasks": N_TASKS,
        "steps": len(steps),
        "step_executions": len(executions),
        "killed_attempts": sum(e.killed for e in executions),
        "failed_log_writes": sum(e.journaled for e in executions),
        "attempts_never_logged": attempts_total - len(executions),
        "retries": attempts_total - len(steps),
        "max_attempts": max(s[3] for s in steps),
        "transactional_rows": len(ledger),
        "transactional_retries": sum(step[(t, "E")][3] - 1 for t in fed),
        "retry_after_kill_min_s_past_lease": round(min(margins), 2) if margins else None,
    }


def check_items(sql: Sql, journal_dir: Path, pool: Pool, fed: list[int]) -> dict[str, Any]:
    """The for_each tasks: every item complete, no item ran twice at once, results kept."""
    assert len(fed) == N_ITEM_TASKS
    tasks = sql("SELECT status FROM tasker_tasks WHERE task_id = ANY(%s)", (fed,))
    assert [t[0] for t in tasks] == ["complete"] * N_ITEM_TASKS
    rows = sql(
        "SELECT task_id, item_index, status, attempts, results FROM tasker_step_items"
        " WHERE task_id = ANY(%s) ORDER BY task_id, item_index",
        (fed,),
    )
    assert len(rows) == chaos_app.ITEMS * N_ITEM_TASKS
    bad = [r for r in rows if r[2] != "complete" or not 1 <= r[3] <= chaos_app.RETRY_LIMIT]
    assert not bad, f"items not complete or over their attempts: {bad[:10]}"
    item = {(r[0], f"E{r[1]}"): r for r in rows}
    steps = sql(
        "SELECT task_id, results FROM tasker_workflow_steps WHERE task_id = ANY(%s)", (fed,)
    )
    for task_id, results in steps:
        mine = [r[4] for r in rows if r[0] == task_id]
        assert results == {"items": mine}, f"task {task_id}: step results are not its items'"
    ours = set(fed)
    executions = [e for e in load_executions(sql, journal_dir, pool.killed) if e.task_id in ours]
    unexplained = [e for e in executions if e.end is None]
    assert not unexplained, f"item runs with no end whose worker was not killed: {unexplained}"
    by_item: dict[tuple[int, str], list[Execution]] = defaultdict(list)
    for e in executions:
        by_item[(e.task_id, e.step)].append(e)
    problems = []
    for key, row in item.items():
        runs = sorted(by_item.get(key, []), key=lambda e: e.started_at)
        for prev, nxt in itertools.pairwise(runs):
            assert prev.end is not None
            if nxt.started_at < prev.end:
                problems.append(f"{key}: item runs overlap: {prev} and {nxt}")
        final = {e.execution_id: e for e in runs}.get(row[4]["execution_id"])
        if final is None or final.ended_at is None or row[4]["attempt"] != row[3]:
            problems.append(f"{key}: results {row[4]} not from its last finished run {runs}")
    assert not problems, "\n".join(problems[:30])
    return {
        "item_tasks": N_ITEM_TASKS,
        "item_runs": len(executions),
        "item_runs_killed": sum(e.killed for e in executions),
        "item_retries": sum(r[3] for r in rows) - len(rows),
    }
