"""HTTP API throughput: `GET /api/v1/tasks/{id}` and `POST /api/v1/tasks` under wrk.

Creates a fresh PostgreSQL database, preloads it with `--preload` diamond tasks run to
completion (so each GET returns a task with four finished steps), starts `tasker serve
bench.diamond_app:app --workers 2` with a write token and the Redis broker (on a queue of
its own, deleted at the end), and drives each endpoint with wrk (Debian's `wrk` package)
for `--duration` seconds after a short warm-up: GET on random preloaded ids, POST of a new
diamond (no idempotency key: each request stores a task). A Lua script sets the
Authorization header and the body and reports wrk's own latency percentiles. Prints one
JSON object: requests/s, p50/p90/p99 and errors per endpoint, the tasks the POST run
stored, and the machine. Nothing runs the posted tasks: this measures the API alone.

Run: `python bench/http_api.py [--duration 10] [--connections 16] [--workers 2]
[--preload 1000] [--json FILE]`; BENCH_KEEP=1 keeps the database.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.diamond_app import TASK_NAME, make_app  # noqa: E402
from bench.throughput import cpu_times  # noqa: E402
from tasker import TaskRequest  # noqa: E402

ADMIN = "host=127.0.0.1 user=root dbname=postgres"

#: What each POST sends: a new diamond (no idempotency key, so each request stores a task).
POST_BODY = json.dumps(
    {
        "name": TASK_NAME,
        "context": {"order_id": 42, "source": "wrk"},
        "initiator": "bench",
        "source_system": "wrk",
        "reason": "http benchmark",
    }
)

#: wrk's script: args are the token, "get" or "post", and the range of task ids to GET.
#: `done` prints wrk's own figures (microseconds) as one JSON line after `WRKJSON `.
WRK_LUA = """
local token, mode, lo, hi
function init(args)
  token, mode, lo, hi = args[1], args[2], tonumber(args[3]), tonumber(args[4])
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  wrk.headers["Authorization"] = "Bearer " .. token
  if args[5] == "close" then
    wrk.headers["Connection"] = "close"
  end
  if mode == "post" then
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.body = [[%(body)s]]
  end
end
function request()
  if mode == "get" then
    return wrk.format(nil, "/api/v1/tasks/" .. math.random(lo, hi))
  end
  return wrk.format(nil, "/api/v1/tasks")
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p90_us": %%d, '
    .. '"p99_us": %%d, "max_us": %%d, "mean_us": %%.1f, "errors": {"connect": %%d, '
    .. '"read": %%d, "write": %%d, "status": %%d, "timeout": %%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write,
    e.status, e.timeout))
end
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wrk(
    url: str, script: Path, args: argparse.Namespace, seconds: float, *lua_args: str
) -> dict[str, Any]:
    """Run wrk for `seconds` and return its figures (ms, requests/s, errors)."""
    cmd = [
        "wrk",
        f"-t{args.wrk_threads}",
        f"-c{args.connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        "--",
        *lua_args,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 60)
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRKJSON "))
    raw = json.loads(line.removeprefix("WRKJSON "))
    failed = sum(raw["errors"].values())
    return {
        "requests": raw["requests"],
        "requests_per_s": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "mean_ms": round(raw["mean_us"] / 1000, 3),
        "errors": raw["errors"],
        "ok": raw["requests"] - failed,
    }


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"tasker serve exited {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"tasker serve did not answer in 60 s:\n{log.read_text()}")


def check_once(base: str, token: str, task_id: int) -> None:
    """One GET and one POST as wrk sends them: stop with the answer unless both succeed."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
        for r in (c.get(f"/api/v1/tasks/{task_id}"), c.post("/api/v1/tasks", content=POST_BODY)):
            if r.status_code >= 300:
                raise SystemExit(f"{r.request.method} {r.request.url}: {r.status_code} {r.text}")


def process_tree(pid: int) -> set[int]:
    """`pid` and its descendants, from /proc."""
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def backends(dsn: str) -> set[int]:
    """The PostgreSQL server processes connected to the benchmark's database."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchall()
        return {int(r[0]) for r in rows}


def measured(
    base: str, script: Path, args: argparse.Namespace, server: int, dsn: str, *lua_args: str
) -> dict[str, Any]:
    """One measured wrk run, with the CPU each party used per request (ms) during it."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    before, started = cpu_times(), time.monotonic()
    result = wrk(base, script, args, args.duration, *lua_args)
    after, wall = cpu_times(), time.monotonic() - started
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, which has exited by now
    servers, pg = process_tree(server), backends(dsn)
    spent = {"server": 0.0, "postgres": 0.0, "redis": 0.0, "everything else": 0.0}
    spent["wrk"] = waited.ru_utime + waited.ru_stime - children.ru_utime - children.ru_stime
    per_worker = []
    for pid, (comm, used) in after.items():
        delta = used - before.get(pid, (comm, 0.0))[1]
        if pid in servers:
            spent["server"] += delta
            if pid != server:
                per_worker.append(round(delta / wall, 2))
        elif pid in pg:
            spent["postgres"] += delta
        elif comm.startswith("redis-server"):
            spent["redis"] += delta
        else:
            spent["everything else"] += delta
    n = max(result["requests"], 1)
    result["cpu_ms_per_request"] = {k: round(v * 1000 / n, 2) for k, v in spent.items()}
    result["cores_used_by_each_server_process"] = sorted(per_worker, reverse=True)
    # The other sessions' share of the machine while this run had it.
    result["cpu_busy_by_others_pct"] = round(
        100 * spent["everything else"] / (wall * (os.cpu_count() or 1)), 1
    )
    return result


def count_tasks(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM tasker_tasks").fetchone()
        return int(row[0]) if row else 0


def preload(url: str, n: int) -> tuple[int, int]:
    """Store `n` diamonds and run them to completion; the lowest and highest task id."""
    with make_app(database_url=url, broker_url=None) as app:
        app.migrate()
        ids: list[int] = []
        for start in range(0, n, 500):
            batch = [
                TaskRequest(name=TASK_NAME, context={"order_id": i}, initiator="bench")
                for i in range(start, min(n, start + 500))
            ]
            ids += [r.task_id for r in app.enqueue_many(batch)]
        app.run_until_idle()
        if any(app.get_task(i).status != "complete" for i in (ids[0], ids[-1])):
            raise SystemExit("preloaded tasks did not complete")
    return ids[0], ids[-1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Set up, measure GET then POST, tear down; the figures and the set-up."""
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    name = f"bench_http_{uuid.uuid4().hex[:8]}"
    queue = f"bench_http_{uuid.uuid4().hex[:8]}"
    dsn = f"host=127.0.0.1 user=root dbname={name}"
    url = f"postgresql+psycopg://root@127.0.0.1/{name}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    folder = Path(tempfile.mkdtemp(prefix="bench-http-"))
    script = folder / "tasker.lua"
    script.write_text(WRK_LUA % {"body": POST_BODY})
    token = secrets.token_hex(24)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TASKER_")},
        "PYTHONPATH": str(REPO),
        "TASKER_DATABASE_URL": url,
        "TASKER_API_TOKENS": f"{token}:write",
        "TASKER_QUEUE_NAME": queue,
    }
    if args.redis_url:
        env["TASKER_BROKER_URL"] = args.redis_url
    log = folder / "serve.log"
    server: subprocess.Popen[bytes] | None = None
    try:
        first, last = preload(url, args.preload)
        with log.open("wb") as out:
            server = subprocess.Popen(
                [
                    *(sys.executable, "-m", "tasker", "serve", "bench.diamond_app:app"),
                    *("--port", str(port), "--workers", str(args.workers)),
                ],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until_up(base, server, log)
        check_once(base, token, first)
        load_before = os.getloadavg()
        conn = "close" if args.close else "keep-alive"
        get_args = (token, "get", str(first), str(last), conn)
        post_args = (token, "post", "0", "0", conn)
        wrk(base, script, args, args.warmup, *get_args)
        get = measured(base, script, args, server.pid, dsn, *get_args)
        wrk(base, script, args, args.warmup, *post_args)
        time.sleep(0.5)  # requests wrk stopped waiting for may still commit
        before = count_tasks(dsn)
        post = measured(base, script, args, server.pid, dsn, *post_args)
        time.sleep(0.5)  # requests wrk stopped waiting for may still commit
        post["tasks_stored"] = count_tasks(dsn) - before
        load_after = os.getloadavg()
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        if args.redis_url:
            client = redis.Redis.from_url(args.redis_url)
            keys = list(client.scan_iter(match=f"*{queue}*"))
            if keys:
                client.delete(*keys)
            client.close()
        if not os.environ.get("BENCH_KEEP"):
            with psycopg.connect(ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            shutil.rmtree(folder, ignore_errors=True)
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    wrk_text = (wrk_version.stdout or wrk_version.stderr).strip()
    return {
        "get_task": get,
        "post_task": post,
        "settings": {
            **vars(args),
            "server": f"tasker serve --workers {args.workers} (uvicorn), PostgreSQL"
            + (" + Redis broker" if args.redis_url else " + in-process broker"),
            "preloaded_ids": [first, last],
            "wrk": wrk_text.splitlines()[0] if wrk_text else "?",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10, help="seconds of each measured run")
    p.add_argument("--warmup", type=float, default=2, help="seconds of each unmeasured run")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument(
        "--close",
        action="store_true",
        help="a new connection per request (else wrk keeps --connections open)",
    )
    p.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    p.add_argument("--preload", type=int, default=1000, help="finished tasks to GET from")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/12", help="'' for none")
    p.add_argument("--json", help="write the result here too")
    args = p.parse_args()
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
