"""The cost of submitting tasks on PostgreSQL + Redis, from one client thread.

No worker runs: this measures the client's side only (the tasks and their messages pile
up in a fresh database and Redis db, both dropped at the end). Reported:

- latency of one `app.enqueue` (p50, p99, mean, client CPU per call: the relay thread
  included), after a warm-up, in three ways:
  * `relay`: as shipped: the message is sent after the commit by the app's relay thread;
  * `inline`: the message sent on the caller's path (the relay turned off), as before
    the relay existed;
  * `enqueue_many([one])`, for comparison;
- the time from calling `enqueue` until its message is in Redis (relay and inline): what
  a worker waits for;
- a submission of `--batch` tasks (default 1000) done one `enqueue` at a time (relay
  and inline) and by one `enqueue_many` call: the time until the calls returned and
  until every message was in Redis (`relay.flush()`), and the client CPU.

Each way runs `--rounds` times, the ways interleaved round by round, so a machine whose
speed drifts treats them alike; the medians of the rounds are reported. Run from the
repository root (the services of `scripts/services`):

    .venv/bin/python bench/enqueue.py --json /tmp/enqueue.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.diamond_app import TASK_NAME, make_app  # noqa: E402
from tasker import Tasker, TaskRequest  # noqa: E402

ADMIN = "host=127.0.0.1 user=root dbname=postgres"


def _request(i: int) -> TaskRequest:
    return TaskRequest(name=TASK_NAME, context={"wf": f"e{i}"})


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _single(app: Tasker, n: int, call: Callable[[TaskRequest], Any]) -> dict[str, float]:
    """`n` single submissions; the ms of each, and the client CPU per call."""
    times = []
    cpu = time.process_time()
    for i in range(n):
        began = time.perf_counter()
        call(_request(i))
        times.append((time.perf_counter() - began) * 1000)
    if app.relay is not None:
        app.relay.flush()
    cpu = (time.process_time() - cpu) * 1000 / n
    return {
        "p50_ms": _percentile(times, 0.5),
        "p99_ms": _percentile(times, 0.99),
        "mean_ms": statistics.fmean(times),
        "cpu_ms": cpu,
    }


def _delivery(app: Tasker, client: redis.Redis, n: int) -> dict[str, float]:
    """`n` single enqueues, each followed by waiting until its message is in Redis."""
    key = f"dramatiq:{app.settings.queue_name}.msgs"
    times = []
    for i in range(n):
        before = client.hlen(key)
        began = time.perf_counter()
        app.enqueue(_request(i))
        while client.hlen(key) == before:
            pass
        times.append((time.perf_counter() - began) * 1000)
    return {"p50_ms": _percentile(times, 0.5), "p99_ms": _percentile(times, 0.99)}


def _submission(app: Tasker, n: int, bulk: bool) -> dict[str, float]:
    """`n` tasks one by one or in one `enqueue_many`; seconds until returned and sent."""
    requests = [_request(i) for i in range(n)]
    cpu = time.process_time()
    began = time.perf_counter()
    if bulk:
        app.enqueue_many(requests)
    else:
        for r in requests:
            app.enqueue(r)
    returned = time.perf_counter() - began
    if app.relay is not None:
        app.relay.flush()
    sent = time.perf_counter() - began
    return {
        "returned_s": returned,
        "sent_s": sent,
        "cpu_s": time.process_time() - cpu,
    }


def _median(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every way `args.rounds` times, interleaved; the medians and the set-up."""
    name = f"bench_enqueue_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    client = redis.Redis.from_url(args.broker_url)
    client.flushdb()
    app = make_app(
        database_url=f"postgresql+psycopg://root@127.0.0.1/{name}", broker_url=args.broker_url
    )
    relay = app.relay
    try:
        app.migrate()
        for i in range(args.warmup):
            app.enqueue(_request(i))

        def inline(call: Callable[[], dict[str, float]]) -> dict[str, float]:
            app.relay = None  # the message sent on the caller's path (app._announce)
            try:
                return call()
            finally:
                app.relay = relay

        ways: dict[str, Callable[[], dict[str, float]]] = {
            "enqueue (relay)": lambda: _single(app, args.n, app.enqueue),
            "enqueue (inline send)": lambda: inline(lambda: _single(app, args.n, app.enqueue)),
            "enqueue_many([one])": lambda: _single(app, args.n, lambda r: app.enqueue_many([r])),
            "enqueue to message in Redis (relay)": lambda: _delivery(app, client, args.n // 4),
            "enqueue to message in Redis (inline send)": lambda: inline(
                lambda: _delivery(app, client, args.n // 4)
            ),
            f"{args.batch} one by one (relay)": lambda: _submission(app, args.batch, False),
            f"{args.batch} one by one (inline send)": lambda: inline(
                lambda: _submission(app, args.batch, False)
            ),
            f"{args.batch} by enqueue_many": lambda: _submission(app, args.batch, True),
        }
        results: dict[str, list[dict[str, float]]] = {w: [] for w in ways}
        for _ in range(args.rounds):
            for way, call in ways.items():
                results[way].append(call())
    finally:
        app.close()
        client.flushdb()
        client.close()
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": vars(args),
        "medians": {w: _median(r) for w, r in results.items()},
        "rounds": results,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500, help="single enqueues per round and way")
    p.add_argument("--batch", type=int, default=1000, help="tasks of one submission")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--broker-url", default="redis://127.0.0.1:6379/12")
    p.add_argument("--json", help="write the result here too")
    args = p.parse_args()
    result = run(args)
    for way, m in result["medians"].items():
        figures = ", ".join(f"{k} {v:.3f}" for k, v in m.items())
        print(f"{way:42} {figures}")
    print(f"load average at the end: {result['machine']['load_average']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
