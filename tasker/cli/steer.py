"""The steering commands of `tasker`: cancel, retry, resume, resolve, signal and history.

Each prints the task as it is afterwards (`--json` for a machine-readable form) and exits
0, or 2 with the error on stderr when the call is refused (the main entry point maps every
`TaskerError` to 2: an unknown task, a step that cannot change, a task that has finished).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from tasker.cli.main import _app
from tasker.cli.output import print_json, print_task, table
from tasker.core.views import TaskView
from tasker.errors import InvalidRequestError


def _show(task: TaskView, as_json: bool) -> int:
    print_json(task) if as_json else print_task(task)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a task (with a step name: cancel that one step)."""
    app = _app(args)
    try:
        if args.step:
            return _show(app.cancel_step(args.task_id, args.step), args.json)
        return _show(app.cancel(args.task_id), args.json)
    finally:
        app.close()


def cmd_retry(args: argparse.Namespace) -> int:
    """Give a task's failed steps a fresh attempt budget; the task resumes."""
    app = _app(args)
    try:
        return _show(app.retry(args.task_id), args.json)
    finally:
        app.close()


def cmd_resume(args: argparse.Namespace) -> int:
    """Let a paused task go on (steps that ran out of attempts pausing it get a fresh budget).

    A task that is not paused is refused (exit 2) and left as it is.
    """
    app = _app(args)
    try:
        return _show(app.resume(args.task_id), args.json)
    finally:
        app.close()


def cmd_resolve(args: argparse.Namespace) -> int:
    """Resolve one step by hand (with results), or the whole task without a step name."""
    app = _app(args)
    try:
        if args.step is None:
            if args.results is not None:
                raise InvalidRequestError("--results needs a step name: tasker resolve ID STEP")
            return _show(app.resolve_task(args.task_id, reason=args.reason), args.json)
        results = None
        if args.results is not None:
            try:
                results = json.loads(args.results)
            except json.JSONDecodeError as exc:
                raise InvalidRequestError(f"--results is not valid JSON: {exc}") from exc
        return _show(app.resolve_step(args.task_id, args.step, results), args.json)
    finally:
        app.close()


def cmd_signal(args: argparse.Namespace) -> int:
    """Signal an event (with a JSON payload) to a task; a step waiting for it goes on."""
    payload = None
    if args.payload is not None:
        try:
            payload = json.loads(args.payload)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"--payload is not valid JSON: {exc}") from exc
    app = _app(args)
    try:
        app.signal(args.task_id, args.name, payload)
        return _show(app.get_task(args.task_id), args.json)
    finally:
        app.close()


def cmd_history(args: argparse.Namespace) -> int:
    """Print a task's audit trail, oldest first."""
    app = _app(args)
    try:
        rows = app.history(args.task_id)
        if args.json:
            print_json(rows)
            return 0
        table(
            ("when", "step", "from", "to", "attempt", "reason"),
            [
                (
                    f"{h.created_at:%Y-%m-%d %H:%M:%S}",
                    h.step or "(task)",
                    h.from_status or "-",
                    h.to_status,
                    h.attempt,
                    h.reason,
                )
                for h in rows
            ],
        )
        return 0
    finally:
        app.close()


def steering_commands(sub: Any, db_opts: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the cancel, retry, resume, resolve, signal and history subcommands to `sub`."""
    c = sub.add_parser("cancel", help="cancel a task, or one step of it")
    c.add_argument("task_id", type=int)
    c.add_argument("step", nargs="?", help="cancel only this pending or failed step")
    r = sub.add_parser("retry", help="retry a task's failed steps with a fresh budget")
    r.add_argument("task_id", type=int)
    u = sub.add_parser("resume", help="let a paused task go on")
    u.add_argument("task_id", type=int)
    v = sub.add_parser("resolve", help="resolve a step (or, with no step, the task) by hand")
    v.add_argument("task_id", type=int)
    v.add_argument("step", nargs="?", help="the step to resolve; none: the whole task")
    v.add_argument("--results", help="the step's results, a JSON object")
    v.add_argument("--reason", default="resolved manually", help="for the whole task")
    g = sub.add_parser("signal", help="signal an event to a task (a step waits for it)")
    g.add_argument("task_id", type=int)
    g.add_argument("name", help="the event's name (a step's wait_for)")
    g.add_argument("--payload", help="the event's payload, a JSON value")
    h = sub.add_parser("history", help="a task's audit trail, oldest first")
    h.add_argument("task_id", type=int)
    commands = (
        (c, cmd_cancel),
        (r, cmd_retry),
        (u, cmd_resume),
        (v, cmd_resolve),
        (g, cmd_signal),
        (h, cmd_history),
    )
    for sp, func in commands:
        sp.add_argument("--json", action="store_true", help="print JSON")
        db_opts(sp)
        sp.set_defaults(func=func)
