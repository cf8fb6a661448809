"""The `tasker` command line: demo, worker, serve, graph, migrate, enqueue, status and more."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from tasker.app import Tasker
from tasker.core.duration import parse_duration
from tasker.core.views import TaskView
from tasker.definition.request import TaskRequest
from tasker.errors import TaskerError


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)).rstrip(), line]
    out += [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells[1:]
    ]
    return "\n".join(out)


def _short(value: Any, width: int = 48) -> str:
    text = "" if value is None else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def render_task(task: TaskView) -> str:
    """A readable table of one task and its steps."""
    head = (
        f"task {task.task_id}  {task.name} v{task.version}  status={task.status}  "
        f"requested {task.requested_at:%Y-%m-%d %H:%M:%S}Z"
    )
    rows = []
    for s in task.steps.values():
        shown = (
            s.results if s.error is None or s.status != "error" else {"error": s.error["message"]}
        )
        rows.append(
            (
                s.name,
                s.status,
                f"{s.attempts}/{s.retry_limit if s.retryable else 1}",
                s.dependent_system,
                ",".join(s.depends_on) or "-",
                _short(shown),
            )
        )
    return head + "\n" + _table(("step", "status", "attempts", "system", "after", "results"), rows)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _app(args: argparse.Namespace) -> Tasker:
    if getattr(args, "app", None):
        from tasker.transport.worker import load_app

        return load_app(args.app)
    return Tasker(database_url=getattr(args, "database_url", None))


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the bundled e-commerce workflows on the embedded default and show what happened."""
    from tasker.cli import demo

    folder = args.dir or tempfile.mkdtemp(prefix="tasker-demo-")
    url = f"sqlite:///{os.path.join(folder, 'tasker-demo.db')}"
    print(f"tasker demo: embedded SQLite at {url} with the in-process broker and worker\n")
    app = Tasker(database_url=url, backoff_base=0.3, backoff_max=2, sweep_seconds=1)
    app.register(demo.OrderFulfillment)
    app.migrate()
    ids = [
        app.enqueue(
            TaskRequest(
                name="order_fulfillment",
                context=o,
                initiator="demo",
                source_system="shop",
                reason="new order",
            )
        ).task_id
        for o in demo.sample_orders()
    ]
    print(f"enqueued {len(ids)} orders: tasks {ids}")
    app.start(threads=4)
    started, last, resolved = time.monotonic(), "", False
    try:
        while time.monotonic() - started < 60:
            tasks = [app.get_task(i) for i in ids]
            counts: dict[str, int] = {}
            for t in tasks:
                counts[t.status] = counts.get(t.status, 0) + 1
            retrying = sum(
                1
                for t in tasks
                for s in t.steps.values()
                if s.status == "error" and s.next_attempt_at is not None
            )
            line = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            line += f"; {retrying} step(s) waiting to retry" if retrying else ""
            if line != last:
                print(f"[{time.monotonic() - started:5.1f}s] {line}")
                last = line
            stuck = [t for t in tasks if t.status == "error"]
            if stuck and not resolved:
                for t in stuck:
                    why = (t.steps["fraud_review"].error or {}).get("message")
                    print(
                        f"        task {t.task_id}: fraud_review failed for good ({why!r}); "
                        "an operator resolves it"
                    )
                    app.resolve_step(t.task_id, "fraud_review", {"cleared": "by operator"})
                resolved = True
            if all(t.status == "complete" for t in tasks):
                break
            time.sleep(0.1)
    finally:
        app.stop()
    print()
    for i in ids:
        print(render_task(app.get_task(i)) + "\n")
    audits = app.annotations("order_audit")
    print("annotation report: order_audit")
    print(
        _table(
            ("task", "order", "region", "total"),
            [
                (
                    a.task_id,
                    a.annotation["order_id"],
                    a.annotation["region"],
                    f"{a.annotation['total_cents'] / 100:.2f}",
                )
                for a in audits
            ],
        )
    )
    eu = app.annotations("order_audit", contains={"region": "eu"})
    outages = app.annotations("tax_outage")
    retried = ", ".join(f"task {a.task_id} attempt {a.annotation['attempt']}" for a in outages)
    print(
        f"\n{len(eu)} EU order(s) shipped; {len(outages)} tax-service outage(s) retried ({retried})"
    )
    ok = all(app.get_task(i).status == "complete" for i in ids)
    app.close()
    return 0 if ok else 1


def cmd_worker(args: argparse.Namespace) -> int:
    """Run worker processes for an app."""
    from tasker.transport.worker import run_one, supervise

    if args.processes > 1:
        return supervise(args.app_ref, args.processes, args.threads)
    run_one(args.app_ref, args.threads)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Create or upgrade the schema."""
    app = _app(args)
    app.migrate()
    print(f"schema is up to date at {app.db.engine.url.render_as_string(hide_password=True)}")
    app.close()
    return 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    """Validate and enqueue a task."""
    try:
        context = json.loads(args.context)
    except json.JSONDecodeError as exc:
        print(f"error: --context is not valid JSON: {exc}", file=sys.stderr)
        return 2
    app = _app(args)
    try:
        task = app.enqueue(
            TaskRequest(
                name=args.name,
                context=context,
                version=args.version,
                initiator=args.initiator,
                reason=args.reason,
                idempotency_key=args.idempotency_key,
            )
        )
    finally:
        app.close()
    print(
        json.dumps({"task_id": task.task_id, "status": task.status})
        if args.json
        else f"enqueued task {task.task_id} ({task.name} v{task.version})"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Show one task, or the newest tasks."""
    app = _app(args)
    try:
        if args.task_id is None:
            tasks = app.list_tasks(status=args.status, name=args.name, limit=args.limit)
            if args.json:
                print(json.dumps([_jsonable(asdict(t)) for t in tasks], indent=2))
            else:
                print(
                    _table(
                        ("task", "name", "version", "status", "requested", "completed"),
                        [
                            (
                                t.task_id,
                                t.name,
                                t.version,
                                t.status,
                                f"{t.requested_at:%Y-%m-%d %H:%M:%S}",
                                t.completed_at and f"{t.completed_at:%Y-%m-%d %H:%M:%S}",
                            )
                            for t in tasks
                        ],
                    )
                )
            return 0
        if getattr(args, "wait", False):
            try:
                task = app.wait(args.task_id, timeout=args.timeout)
            except TimeoutError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 4
        else:
            task = app.get_task(args.task_id)
        print(json.dumps(_jsonable(asdict(task)), indent=2) if args.json else render_task(task))
        return 0 if task.status != "error" else 3
    finally:
        app.close()


def cmd_schedules(args: argparse.Namespace) -> int:
    """List the schedules."""
    app = _app(args)
    try:
        found = app.schedules()
    finally:
        app.close()
    if args.json:
        print(json.dumps([_jsonable(asdict(s)) for s in found], indent=2, default=str))
        return 0
    rows = [
        (
            s.name,
            s.request.name,
            s.cron if s.cron is not None else f"every {s.every}",
            s.timezone,
            f"{s.next_tick:%Y-%m-%d %H:%M:%S}Z",
        )
        for s in found
    ]
    print(_table(("schedule", "task", "when", "timezone", "next tick"), rows))
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    """Delete final tasks that completed longer ago than --older-than."""
    try:
        seconds = parse_duration(args.older_than)
    except ValueError as exc:
        print(f"error: --older-than: {exc}", file=sys.stderr)
        return 2
    app = _app(args)
    try:
        deleted = app.purge(older_than=seconds)
    finally:
        app.close()
    print(f"purged {deleted} task(s) completed more than {args.older_than} ago")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the HTTP API, dashboard and metrics of an app (and a worker with --worker)."""
    import uvicorn

    from tasker.transport.worker import load_app
    from tasker.web import create_app

    host = args.host
    if args.insecure_no_auth:
        if host not in (None, "127.0.0.1"):
            print("error: --insecure-no-auth serves on 127.0.0.1 only", file=sys.stderr)
            return 2
        host = "127.0.0.1"
    app = load_app(args.app_ref)
    try:
        asgi = create_app(app, insecure_no_auth=args.insecure_no_auth)
    except TaskerError:
        app.close()
        raise
    if args.worker:
        app.start(threads=args.threads)
    where = f"http://{host or '127.0.0.1'}:{args.port}"
    print(f"tasker serve: dashboard {where}/ api {where}/api/v1 metrics {where}/metrics")
    try:
        uvicorn.run(asgi, host=host or "127.0.0.1", port=args.port, log_level="warning")
    finally:
        app.close()
    return 0


def _web_commands(sub: Any) -> None:
    """The `serve` and `graph` subcommands."""
    sv = sub.add_parser("serve", help="serve the HTTP API, dashboard and metrics of MODULE[:ATTR]")
    sv.add_argument("app_ref", metavar="MODULE[:ATTR]")
    sv.add_argument("--host", help="default 127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve without tokens (every caller may write), on 127.0.0.1 only",
    )
    sv.add_argument("--worker", action="store_true", help="also run a worker in this process")
    sv.add_argument("--threads", type=int, default=8, help="with --worker: engine threads")
    sv.set_defaults(func=cmd_serve)


def parser() -> argparse.ArgumentParser:
    """The argument parser of `tasker`."""
    p = argparse.ArgumentParser(prog="tasker", description="A durable DAG task orchestrator.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the bundled example workflows on the embedded default")
    d.add_argument("--dir", help="folder for the demo's SQLite file (default: a new temp folder)")
    d.set_defaults(func=cmd_demo)

    w = sub.add_parser("worker", help="run a worker (and the sweeper) for MODULE[:ATTR]")
    w.add_argument("app_ref", metavar="MODULE[:ATTR]")
    w.add_argument("--processes", type=int, default=1)
    w.add_argument("--threads", type=int, default=8)
    w.set_defaults(func=cmd_worker)

    _web_commands(sub)

    def db_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--app",
            help="MODULE[:ATTR] of your Tasker (default: $TASKER_APP)",
            default=os.environ.get("TASKER_APP"),
        )
        sp.add_argument(
            "--database-url", help="default: $TASKER_DATABASE_URL or sqlite:///tasker.db"
        )

    m = sub.add_parser("migrate", help="create or upgrade the schema")
    db_opts(m)
    m.set_defaults(func=cmd_migrate)

    e = sub.add_parser("enqueue", help="enqueue a task (needs --app, to validate it)")
    e.add_argument("name")
    e.add_argument("--context", default="{}", help="the context as JSON")
    e.add_argument("--version")
    e.add_argument("--initiator", default="cli")
    e.add_argument("--reason", default="enqueued from the command line")
    e.add_argument("--idempotency-key")
    e.add_argument("--json", action="store_true")
    db_opts(e)
    e.set_defaults(func=cmd_enqueue)

    s = sub.add_parser("status", help="show a task (or the newest tasks)")
    s.add_argument("task_id", nargs="?", type=int)
    s.add_argument("--json", action="store_true")
    s.add_argument("--status", help="filter the list by status")
    s.add_argument("--name", help="filter the list by task name")
    s.add_argument("--limit", type=int, default=20)
    s.add_argument(
        "--wait", action="store_true", help="block until the task is finished or in error"
    )
    s.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds")
    db_opts(s)
    s.set_defaults(func=cmd_status)

    sc = sub.add_parser("schedules", help="list the schedules and their next ticks")
    sc.add_argument("--json", action="store_true")
    db_opts(sc)
    sc.set_defaults(func=cmd_schedules)

    pu = sub.add_parser("purge", help="delete final tasks older than --older-than")
    pu.add_argument("--older-than", required=True, help="a duration: 30d, 12h, 90m, 45s")
    db_opts(pu)
    pu.set_defaults(func=cmd_purge)

    from tasker.cli.steer import steering_commands  # it imports this module's helpers

    steering_commands(sub, db_opts)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tasker` command; returns the exit code."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except TaskerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        hint = (
            " (has `tasker migrate` been run?)"
            if "no such table" in str(reason) or ("does not exist" in str(reason))
            else ""
        )
        print(f"error: database: {str(reason).strip()}{hint}", file=sys.stderr)
        return 2
