"""The dashboard at `/`: server-rendered pages (Jinja2) with the DAG drawn as inline SVG.

A browser authenticates with the bearer token in the `Authorization` header, or
through `/login`, which sets an HttpOnly, SameSite=Strict session cookie holding
the token's digest. The cookie is honoured by these routes only, never by the JSON
API. Every write action is a POST form carrying the principal's CSRF token, and
needs a `write` token. No JavaScript build step: a few lines of inline script
refresh a page while its task runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from tasker.app import Tasker
from tasker.core.states import TASK_FINAL, TASK_LIVE, Status
from tasker.core.views import StepView, TaskView, TransitionView
from tasker.errors import TaskerError, TaskNotFoundError, UnknownTaskError
from tasker.store import queries
from tasker.web import graph
from tasker.web.api import TaskId, clean_request, decode_cursor, encode_cursor
from tasker.web.auth import SESSION_COOKIE, Principal, TokenBook, bearer
from tasker.web.ops import task_counts
from tasker.web.problems import ProblemError

router = APIRouter(include_in_schema=False, dependencies=[Depends(clean_request)])
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

#: The statuses a task can have (`skipped` is for steps only).
STATUSES = [s.value for s in Status if s is not Status.SKIPPED]
_FINAL = {s.value for s in TASK_FINAL}
#: A page showing a task in one of these refreshes itself (the engine works on it).
_LIVE = {s.value for s in TASK_LIVE}
PAGE_SIZE = 50


def _book(request: Request) -> TokenBook:
    book: TokenBook = request.app.state.book
    return book


def _app(request: Request) -> Tasker:
    app: Tasker = request.app.state.tasker
    return app


def who(request: Request) -> Principal | None:
    """The dashboard's caller: the bearer token, else the session cookie."""
    book = _book(request)
    token = bearer(request.headers.get("authorization"))
    if token is not None:
        return book.from_token(token)
    return book.from_cookie(request.cookies.get(SESSION_COOKIE))


def login_redirect(request: Request) -> RedirectResponse:
    """To the login form, coming back to this page after it."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


def _render(request: Request, name: str, principal: Principal | None, **ctx: Any) -> Response:
    ctx.update(
        principal=principal,
        can_write=bool(principal and principal.can_write),
        csrf=_book(request).csrf_token(principal) if principal else "",
        looks=graph.LOOKS,
        insecure=_book(request).insecure,
    )
    response = templates.TemplateResponse(request, name, ctx)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'"
    )
    return response


def _safe_next(target: str | None) -> str:
    # Only a path of this site: never an absolute or scheme-relative URL.
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None, error: str | None = None) -> Response:
    """The form that takes a token."""
    return _render(request, "login.html", who(request), next=_safe_next(next), error=error)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the token and set the session cookie; back to the form if it is unknown."""
    form = await request.form()
    token = str(form.get("token") or "")
    target = _safe_next(str(form.get("next") or "/"))
    book = _book(request)
    if book.from_token(token) is None or book.insecure:
        query = urlencode({"next": target, "error": "that token is not one this server knows"})
        return RedirectResponse(f"/login?{query}", status_code=303)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        TokenBook.cookie_value(token),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
        max_age=12 * 3600,
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Forget the session cookie."""
    await _checked_form(request, write=False)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _counts(app: Tasker, name: str | None) -> dict[str, int]:
    totals = dict.fromkeys(STATUSES, 0)
    with app.db.read() as conn:
        for task_name, status, count in task_counts(conn):
            if name is None or task_name == name:
                totals[status] = totals.get(status, 0) + count
    return totals


def _blank(value: str | None) -> str | None:
    return value if value else None


@router.get("/", response_class=HTMLResponse)
def task_list(
    request: Request,
    status: str | None = None,
    name: str | None = None,
    subject: str | None = None,
    cursor: str | None = None,
) -> Response:
    """The tasks, newest first, with counts by status and filters."""
    principal = who(request)
    if principal is None:
        return login_redirect(request)
    app = _app(request)
    status, name, subject = _blank(status), _blank(name), _blank(subject)
    if status is not None and status not in STATUSES:
        raise ProblemError(422, f"unknown status {status!r}", kind="validation")
    found = app.list_tasks(status, name, PAGE_SIZE + 1, subject, decode_cursor(_blank(cursor)))
    tasks = found[:PAGE_SIZE]
    more = len(found) > PAGE_SIZE
    filters = {k: v for k, v in {"status": status, "name": name, "subject": subject}.items() if v}
    older = urlencode({**filters, "cursor": encode_cursor(tasks[-1].task_id)}) if more else None
    return _render(
        request,
        "list.html",
        principal,
        tasks=[_row(t) for t in tasks],
        counts=_counts(app, name),
        statuses=STATUSES,
        names=app.factory.names(),
        filters=filters,
        older=older,
        live=any(t.status in _LIVE for t in tasks),
    )


def _row(task: TaskView) -> dict[str, Any]:
    steps = list(task.steps.values())
    done = sum(1 for s in steps if s.status in ("complete", "skipped", "resolved_manually"))
    return {"task": task, "done": done, "total": len(steps)}


def _note(step: StepView) -> str:
    if step.items and step.items.get("total"):
        return f"{step.items.get('complete', 0)}/{step.items['total']} items"
    if _awaits(step):
        return f"awaits {step.awaiting}"
    if step.waiting_for:
        return f"waits: {step.waiting_for}"
    if step.status in ("error", "in_progress") or step.attempts > 1:
        return f"try {step.attempts}/{step.retry_limit if step.retryable else 1}"
    return ""


def _display_status(step: StepView) -> str:
    waiting = step.waiting_for
    if step.status == "pending" and waiting and waiting not in ("dependencies",):
        return "paused" if waiting == "paused" else "waiting"
    return step.status


#: The spawned tasks drawn under one step; more are one "+N more" node.
CHILD_NODES = 8


def _awaits(step: StepView) -> str | None:
    """What a step whose handler returned still waits for: children or items."""
    return step.awaiting if step.status == "in_progress" else None


def _child_nodes(
    task: TaskView, children: Sequence[queries.Spawned]
) -> tuple[list[graph.Node], list[tuple[str, str]]]:
    """Nodes for the tasks the steps spawned, each linked from its step.

    At most `CHILD_NODES` per step, then one node counting the rest.
    """
    step_of = {s.workflow_step_id: s.name for s in task.steps.values()}
    by_step: dict[str, list[queries.Spawned]] = {}
    for child in children:
        step = step_of.get(child.parent_step_id) if child.parent_step_id is not None else None
        if step is not None:
            by_step.setdefault(step, []).append(child)
    nodes: list[graph.Node] = []
    edges: list[tuple[str, str]] = []
    for step, spawned in by_step.items():
        for child in spawned[:CHILD_NODES]:
            key = f"task #{child.task_id}"
            nodes.append(
                graph.Node(
                    key,
                    child.status,
                    "spawned task",
                    f"/tasks/{child.task_id}",
                    child=child.task_id,
                    label=f"#{child.task_id} {child.name}",
                )
            )
            edges.append((step, key))
        rest = len(spawned) - CHILD_NODES
        if rest > 0:
            key = f"{step} +{rest}"
            nodes.append(graph.Node(key, None, "see Children", "#children", label=f"+{rest} more"))
            edges.append((step, key))
    return nodes, edges


def dag_svg(
    task: TaskView,
    labels: Mapping[tuple[str, str], str] | None = None,
    children: Sequence[queries.Spawned] = (),
) -> str:
    """The task's DAG: a node per step, coloured, labelled and linked to its details.

    `labels`: the branch labels of its decision steps, by edge (`graph.branch_labels`).
    `children`: the tasks its steps spawned, drawn linked from their steps.
    """
    nodes = [
        graph.Node(s.name, _display_status(s), _note(s), f"#step-{s.name}", awaits=_awaits(s))
        for s in task.steps.values()
    ]
    edges = [(d, s.name) for s in task.steps.values() for d in s.depends_on]
    spawned, spawn_edges = _child_nodes(task, children)
    title = f"task {task.task_id}: {task.name} {task.version}"
    return graph.svg(nodes + spawned, edges, labels, title=title, spawn_edges=spawn_edges)


def _items(step: StepView) -> str:
    """A for_each step's progress, "complete/total" (and how many failed), else ""."""
    if not step.items:
        return ""
    failed = step.items.get("error", 0)
    done = f"{step.items.get('complete', 0)}/{step.items.get('total', 0)}"
    return f"{done} ({failed} failed)" if failed else done


def _task_error(task: TaskView) -> str | None:
    """Why a task in error failed: its own error, else its failed steps' errors."""
    if task.status != "error":
        return None
    if task.error:
        return str(task.error.get("message") or task.error)
    failed = [
        f"step {s.name}: {(s.error or {}).get('message', 'failed')}"
        for s in task.steps.values()
        if s.status == "error"
    ]
    return "; ".join(failed) or "the task ended in error"


def _branch_labels(app: Tasker, task: TaskView) -> dict[tuple[str, str], str]:
    """The branch labels of the task's handler, when this process has it registered."""
    try:
        return graph.branch_labels(app.factory.get(task.name, task.version))
    except UnknownTaskError:
        return {}


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
def task_page(
    request: Request, task_id: TaskId, notice: str | None = None, error: str | None = None
) -> Response:
    """One task: its DAG, steps (inputs, results, errors, history) and the write actions."""
    principal = who(request)
    if principal is None:
        return login_redirect(request)
    app = _app(request)
    try:
        task = app.get_task(task_id)
    except TaskNotFoundError as exc:
        page = _render(request, "missing.html", principal, message=str(exc), live=False)
        page.status_code = 404
        return page
    by_step: dict[str | None, list[TransitionView]] = {}
    for entry in app.history(task_id):
        by_step.setdefault(entry.step, []).append(entry)
    failed_for_good = any(
        s.status == "error" and s.next_attempt_at is None for s in task.steps.values()
    )
    return _render(
        request,
        "task.html",
        principal,
        task=task,
        svg=dag_svg(task, _branch_labels(app, task), queries.spawned(app.db, task_id)),
        task_error=_task_error(task),
        steps=list(task.steps.values()),
        task_history=by_step.get(None, []),
        step_history=by_step,
        notice=notice,
        error=error,
        as_json=_json,
        live=task.status in _LIVE,
        final=task.status in _FINAL,
        can_retry=failed_for_good and task.status not in _FINAL,
        can_resume=task.status == "paused",
        can_signal=task.status not in _FINAL,
        parent=task.parent_task_id,
        children=list(task.children),
        note=_note,
        items=_items,
        awaits=_awaits,
        display_status=_display_status,
    )


async def _checked_form(request: Request, write: bool = True) -> tuple[Principal, Any]:
    principal = who(request)
    if principal is None:
        raise ProblemError(401, "log in first", kind="unauthorized")
    form = await request.form()
    if not _book(request).csrf_ok(principal, str(form.get("csrf") or "")):
        raise ProblemError(403, "the form's CSRF token is missing or wrong", kind="csrf")
    if write and not principal.can_write:
        raise ProblemError(403, "this token has the read scope; this needs write", kind="forbidden")
    return principal, form


def _back(task_id: int, **message: str) -> RedirectResponse:
    return RedirectResponse(f"/tasks/{task_id}?{urlencode(message)}", status_code=303)


def _parse(field: str, text: str) -> Any:
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _Refused(f"{field} is not valid JSON: {exc}") from None


class _Refused(Exception):
    """A write action the dashboard reports on the task page (not as an error page)."""


@router.post("/tasks/{task_id}/actions/{action}")
async def task_action(request: Request, task_id: TaskId, action: str) -> Response:
    """Run a write action (cancel, retry, resume, resolve, signal) and go back to the page."""
    _, form = await _checked_form(request)
    app = _app(request)
    try:
        if action == "cancel":
            app.cancel(task_id)
            done = "task cancelled"
        elif action == "retry":
            app.retry(task_id)
            done = "the failed steps got a fresh attempt budget and run again"
        elif action == "resume":
            app.resume(task_id)
            done = "task resumed"
        elif action == "resolve":
            step = str(form.get("step") or "")
            results = _parse("results", str(form.get("results") or ""))
            if results is not None and not isinstance(results, dict):
                raise _Refused("results must be a JSON object")
            app.resolve_step(task_id, step, results)
            done = f"step {step} resolved by hand"
        elif action == "signal":
            event = str(form.get("event") or "")
            app.signal(task_id, event, _parse("payload", str(form.get("payload") or "")))
            done = f"event {event} signalled"
        else:
            raise ProblemError(404, f"no action {action!r}", kind="not-found")
    except TaskNotFoundError:
        raise  # no page to go back to: a 404 problem
    except (TaskerError, _Refused) as exc:
        return _back(task_id, error=str(exc))
    return _back(task_id, notice=done)
