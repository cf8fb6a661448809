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
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from tasker.app import Tasker
from tasker.cli.output import print_json, print_task, progress, table
from tasker.core.duration import parse_duration
from tasker.definition.request import TaskRequest
from tasker.errors import TaskerError


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
    with progress() as bar:
        job = bar.add_task("orders complete", total=len(ids))
        try:
            while time.monotonic() - started < 60:
                tasks = [app.get_task(i) for i in ids]
                counts: dict[str, int] = {}
                for t in tasks:
                    counts[t.status] = counts.get(t.status, 0) + 1
                bar.update(job, completed=counts.get("complete", 0))
                retrying = sum(
                    1
                    for t in tasks
                    for s in t.steps.values()
                    if s.status == "error" and s.next_attempt_at is not None
                )
                line = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
                line += f"; {retrying} step(s) waiting to retry" if retrying else ""
                if line != last:
                    bar.console.print(f"[{time.monotonic() - started:5.1f}s] {line}", markup=False)
                    last = line
                stuck = [t for t in tasks if t.status == "error"]
                if stuck and not resolved:
                    for t in stuck:
                        why = (t.steps["fraud_review"].error or {}).get("message")
                        bar.console.print(
                            f"        task {t.task_id}: fraud_review failed for good ({why!r}); "
                            "an operator resolves it",
                            markup=False,
                        )
                        app.resolve_step(t.task_id, "fraud_review", {"cleared": "by operator"})
                    resolved = True
                if all(t.status == "complete" for t in tasks):
                    break
                time.sleep(0.1)
        except BaseException:
            app.stop()
            raise
    try:
        if not args.serve:
            app.stop()
        _demo_report(app, ids)
        ok = _demo_journeys(folder) and all(app.get_task(i).status == "complete" for i in ids)
        if args.serve:  # the worker keeps running, for the dashboard's retry and resolve
            from tasker.web import serving

            serving.serve_one_off(app, args.port)
    finally:
        app.stop()
        app.close()
    return 0 if ok else 1


def _demo_journeys(folder: str) -> bool:
    """Run the signup journeys on a fake clock (weeks in a moment); True if all complete."""
    from tasker.cli import demo
    from tasker.testing import FakeClock, speedrun

    url = f"sqlite:///{os.path.join(folder, 'tasker-journeys.db')}"
    print(f"\nsignup journeys: {url}, on a fake clock (days pass in a moment)")
    app = Tasker(database_url=url, clock=FakeClock())
    try:
        app.register(demo.UserSignup)
        app.migrate()
        ok = True
        for user in demo.signups():
            request = TaskRequest(name="user_signup", context=user, subject=user["email"])
            view = speedrun(app, app.enqueue(request).task_id)
            if view.status == "paused":
                why = (view.steps["start_trial"].error or {}).get("message")
                print(f"  task {view.task_id} ({user['email']}): paused ({why!r})")
                print("    a person updates the card and resumes the task")
                demo.DECLINED_CARDS.discard(user["email"])
                app.resume(view.task_id)
                view = speedrun(app, view.task_id)
            print(f"  task {view.task_id} ({user['email']}): {view.status}: {demo.timeline(view)}")
            ok = ok and view.status == "complete"
        return ok
    finally:
        app.close()


def _demo_report(app: Tasker, ids: list[int]) -> None:
    """Print the demo's tasks and its annotation report."""
    print()
    for i in ids:
        print_task(app.get_task(i))
        print()
    audits = app.annotations("order_audit")
    print("annotation report: order_audit")
    table(
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
    eu = app.annotations("order_audit", contains={"region": "eu"})
    outages = app.annotations("tax_outage")
    retried = ", ".join(f"task {a.task_id} attempt {a.annotation['attempt']}" for a in outages)
    print(
        f"\n{len(eu)} EU order(s) shipped; {len(outages)} tax-service outage(s) retried ({retried})"
    )


def cmd_worker(args: argparse.Namespace) -> int:
    """Run worker processes for an app."""
    from tasker.transport.worker import Metrics, run_one, supervise

    if args.graceful_timeout is not None and args.graceful_timeout < 0:
        print("error: --graceful-timeout must be at least 0", file=sys.stderr)
        return 2
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        print(f"error: --metrics-port must be 0-65535, got {args.metrics_port}", file=sys.stderr)
        return 2
    metrics = None
    if args.metrics_multiprocess:  # a child of `--processes N --metrics-port P`
        metrics = Metrics(0, multiprocess=True)
    elif args.metrics_port is not None:
        metrics = Metrics(args.metrics_port, args.metrics_host)
    if args.processes > 1:
        return supervise(args.app_ref, args.processes, args.threads, args.graceful_timeout, metrics)
    run_one(args.app_ref, args.threads, graceful_timeout=args.graceful_timeout, metrics=metrics)
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


#: `tasker status ID`'s exit code by the task's status (0 for the others): a script tells a
#: task that needs a person (in error: 3; paused: 5) from one that is done or still running.
_STATUS_EXIT = {"error": 3, "paused": 5}


def cmd_status(args: argparse.Namespace) -> int:
    """Show one task, or the newest tasks."""
    app = _app(args)
    try:
        if args.task_id is None:
            tasks = app.list_tasks(status=args.status, name=args.name, limit=args.limit)
            if args.json:
                print_json(tasks)
            else:
                table(
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
            return 0
        if getattr(args, "wait", False):
            try:
                task = app.wait(args.task_id, timeout=args.timeout)
            except TimeoutError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 4
        else:
            task = app.get_task(args.task_id)
        print_json(task) if args.json else print_task(task)
        return _STATUS_EXIT.get(task.status, 0)
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
        print_json(found)
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
    table(("schedule", "task", "when", "timezone", "next tick"), rows)
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
    from tasker.web import create_app, serving

    host = args.host
    if args.insecure_no_auth:
        if host not in (None, "127.0.0.1"):
            print("error: --insecure-no-auth serves on 127.0.0.1 only", file=sys.stderr)
            return 2
        host = "127.0.0.1"
    host = host or "127.0.0.1"
    if args.workers < 1:
        print(f"error: --workers must be 1 or more, got {args.workers}", file=sys.stderr)
        return 2
    if args.workers > 1 and args.worker:
        print(
            "error: --worker runs the engine inside a single serving process; "
            "with --workers N run `tasker worker` beside it",
            file=sys.stderr,
        )
        return 2
    app = load_app(args.app_ref)
    try:
        # Built here even for --workers N, so a bad configuration fails before any fork.
        asgi = create_app(app, insecure_no_auth=args.insecure_no_auth)
    except TaskerError:
        app.close()
        raise
    where = f"http://{host}:{args.port}"
    procs = f" ({args.workers} processes)" if args.workers > 1 else ""
    print(f"tasker serve: dashboard {where}/ api {where}/api/v1 metrics {where}/metrics{procs}")
    sys.stdout.flush()
    if args.workers > 1:
        app.close()
        serving.run_workers(args.app_ref, host, args.port, args.workers, args.insecure_no_auth)
        return 0
    if args.worker:
        from tasker.web.worker_metrics import PrometheusObserver

        # One process: its /metrics serves the worker's series beside the database's.
        app.observe(PrometheusObserver(asgi.state.metrics))
        app.start(threads=args.threads)
    try:
        uvicorn.run(asgi, host=host, port=args.port, log_level="warning")
    finally:
        app.close()
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    """Print a registered handler's DAG as Mermaid, DOT or SVG."""
    from tasker.web import graph

    if not args.app:
        print("error: graph needs --app MODULE[:ATTR] (or $TASKER_APP)", file=sys.stderr)
        return 2
    app = _app(args)
    try:
        reg = app.factory.get(args.name, args.version)
    finally:
        app.close()
    draw = {"mermaid": graph.mermaid, "dot": graph.dot, "svg": graph.handler_svg}[args.format]
    print(draw(reg))
    return 0


def _demo_command(sub: Any) -> None:
    """The `demo` subcommand."""
    d = sub.add_parser("demo", help="run the bundled example workflows on the embedded default")
    d.add_argument("--dir", help="folder for the demo's SQLite file (default: a new temp folder)")
    d.add_argument(
        "--serve",
        action="store_true",
        help="then serve the dashboard on the demo's database (127.0.0.1, a one-off token)",
    )
    d.add_argument("--port", type=int, default=8000, help="with --serve (default 8000)")
    d.set_defaults(func=cmd_demo)


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
    sv.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes serving HTTP (default 1); each loads the app itself",
    )
    sv.add_argument("--worker", action="store_true", help="also run a worker in this process")
    sv.add_argument("--threads", type=int, default=8, help="with --worker: engine threads")
    sv.set_defaults(func=cmd_serve)

    g = sub.add_parser("graph", help="print a registered handler's DAG")
    g.add_argument("name")
    g.add_argument("--version", help="default: the newest registered")
    g.add_argument("--format", choices=("mermaid", "dot", "svg"), default="mermaid")
    g.add_argument(
        "--app",
        help="MODULE[:ATTR] of your Tasker (default: $TASKER_APP)",
        default=os.environ.get("TASKER_APP"),
    )
    g.set_defaults(func=cmd_graph)


def _worker_command(sub: Any) -> None:
    """The `worker` subcommand."""
    w = sub.add_parser("worker", help="run a worker (and the sweeper) for MODULE[:ATTR]")
    w.add_argument("app_ref", metavar="MODULE[:ATTR]")
    w.add_argument("--processes", type=int, default=1)
    w.add_argument("--threads", type=int, default=8)
    w.add_argument(
        "--graceful-timeout",
        type=float,
        metavar="SECONDS",
        help="on SIGTERM, let running attempts finish for up to this long "
        "(default: the longest step timeout of the app's handlers)",
    )
    w.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve the workers' Prometheus metrics on this port (with --processes N: "
        "the sum of every process's)",
    )
    w.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for --metrics-port (127.0.0.1)"
    )
    w.add_argument("--metrics-multiprocess", action="store_true", help=argparse.SUPPRESS)
    w.set_defaults(func=cmd_worker)


def parser() -> argparse.ArgumentParser:
    """The argument parser of `tasker`."""
    p = argparse.ArgumentParser(prog="tasker", description="A durable DAG task orchestrator.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    _demo_command(sub)

    _worker_command(sub)

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
        "--wait", action="store_true", help="block until the task is finished, in error or paused"
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
