"""How the command line shows things: Rich tables and colours for people, JSON for scripts.

Statuses are shown by a glyph and their name as well as a colour, so they read the same
without colour (a pipe, a log file) and for colour-blind users.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tasker.core.views import TaskView

#: Glyph and Rich style per status (the dashboard uses the same Okabe-Ito hues).
STATUS_STYLE: dict[str, tuple[str, str]] = {
    "pending": ("○", "dim"),
    "in_progress": ("◐", "bold #0072B2"),
    "complete": ("●", "#009E73"),
    "error": ("✖", "bold #D55E00"),
    "cancelled": ("⊘", "#999999"),
    "resolved_manually": ("✔", "#CC79A7"),
    "skipped": ("↷", "dim"),
    "paused": ("⏸", "#E69F00"),
}


def console() -> Console:
    """A console on stdout; off a terminal it is wide and plain, so nothing wraps or fades."""
    width = None if shutil.get_terminal_size((0, 0)).columns else 200
    return Console(width=width, soft_wrap=False, highlight=False)


def progress() -> Progress:
    """A progress bar (description, bar, done/total, elapsed) for long commands."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console(),
    )


def status_text(status: str) -> Text:
    """A status as glyph + name, coloured."""
    glyph, style = STATUS_STYLE.get(status, ("?", ""))
    return Text(f"{glyph} {status}", style=style)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    """Print a table; a cell that is a status column's value is shown by `status_text`."""
    t = Table(title=title, title_justify="left", header_style="bold", show_edge=False)
    for h in headers:
        t.add_column(h, overflow="fold")
    status_cols = {i for i, h in enumerate(headers) if h in ("status", "from", "to")}
    for row in rows:
        t.add_row(
            *(
                status_text(str(c)) if i in status_cols and c in STATUS_STYLE else _cell(c)
                for i, c in enumerate(row)
            )
        )
    console().print(t)


def _cell(value: Any) -> Text:
    return Text("" if value is None else str(value))


def short(value: Any, width: int = 48) -> str:
    """A JSON value on one line, cut at `width` characters."""
    text = "" if value is None else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def print_task(task: TaskView) -> None:
    """Print a task: its head line, then its steps as a table."""
    glyph, style = STATUS_STYLE.get(task.status, ("?", ""))
    head = Text.assemble(
        (f"task {task.task_id}  ", "bold"),
        f"{task.name} v{task.version}  ",
        (f"{glyph} status={task.status}", style),
        f"  requested {task.requested_at:%Y-%m-%d %H:%M:%S}Z",
    )
    console().print(head)
    rows = []
    for s in task.steps.values():
        failed = s.error is not None and s.status == "error"
        shown = {"error": s.error["message"]} if failed and s.error else s.results
        rows.append(
            (
                s.name,
                s.status,
                f"{s.attempts}/{s.retry_limit if s.retryable else 1}",
                s.dependent_system,
                ",".join(s.depends_on) or "-",
                short(shown),
            )
        )
    table(("step", "status", "attempts", "system", "after", "results"), rows)


def jsonable(value: Any) -> Any:
    """`value` with dataclasses as dicts and datetimes as ISO strings, ready for json."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """Print `value` as indented JSON (plain: scripts parse it)."""
    print(json.dumps(jsonable(value), indent=2, default=str))
