"""The JSON API under `/api/v1`: enqueue, inspect and steer tasks over HTTP."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tasker.app import Tasker
from tasker.core.jsonvalue import json_problem
from tasker.definition.registry import RegisteredTask
from tasker.definition.request import TaskRequest
from tasker.errors import InvalidRequestError, StepNotFoundError
from tasker.web import schemas as s
from tasker.web.auth import Principal, TokenBook
from tasker.web.graph import handler_edges
from tasker.web.problems import ProblemError, responses

_bearer = HTTPBearer(
    auto_error=False, description="a token of TASKER_API_TOKENS (scope read or write)"
)


def principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from its bearer token (the API takes no cookie).

    Raises:
        ProblemError: 401 for a missing or unknown token.
    """
    book: TokenBook = request.app.state.book
    found = book.from_token(creds.credentials if creds else None)
    if found is None:
        raise ProblemError(
            401,
            "a bearer token is required: Authorization: Bearer <token>"
            if creds is None
            else "the bearer token is not one this server knows",
            kind="unauthorized",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return found


def writer(who: Annotated[Principal, Depends(principal)]) -> Principal:
    """The caller, who must hold a `write` token.

    Raises:
        ProblemError: 403 for a `read` token.
    """
    if not who.can_write:
        raise ProblemError(403, "this token has the read scope; this needs write", kind="forbidden")
    return who


def clean_request(request: Request) -> None:
    """Refuse a path or query holding NUL, which no database column can store.

    Raises:
        ProblemError: 422 naming the character.
    """
    for where, text in (
        ("path", request.scope.get("path", "")),
        ("query", str(request.query_params)),
    ):
        if "\x00" in text or "%00" in text:
            raise ProblemError(422, f"the {where} holds a NUL character", kind="validation")


Reader = Annotated[Principal, Depends(principal)]
Writer = Annotated[Principal, Depends(writer)]
TaskId = Annotated[int, Path(ge=1, le=s.MAX_ID, description="the task's id")]
StepName = Annotated[str, Path(min_length=1, max_length=128, description="the step's name")]

router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(clean_request)],
    responses=responses(401, 422),
)

_BODY = responses(400, 403, 413)


def _app(request: Request) -> Tasker:
    app: Tasker = request.app.state.tasker
    return app


def _storable(field: str, value: Any) -> None:
    problem = json_problem(value, field)
    if problem:
        raise InvalidRequestError(problem)


def encode_cursor(task_id: int) -> str:
    """The cursor of the page after the one that ended with `task_id`."""
    return base64.urlsafe_b64encode(f"before:{task_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The task id a cursor continues before (None: the first page).

    Raises:
        ProblemError: 422 for a cursor this server did not issue.
    """
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind == "before" and value.isdigit() and 0 < int(value) <= s.MAX_ID:
            return int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ProblemError(422, "cursor is not one this server issued", kind="invalid-cursor")


def _step(app: Tasker, task_id: int, name: str) -> dict[str, Any]:
    view = app.get_task(task_id)
    if name not in view.steps:
        raise StepNotFoundError(f"task {task_id} has no step {name!r}")
    return s.step_json(view.steps[name])


@router.post(
    "/tasks",
    status_code=201,
    response_model=s.TaskOut,
    responses={
        200: {"model": s.TaskOut, "description": "an idempotent repeat: the first task"},
        **_BODY,
        **responses(409),
    },
    summary="Enqueue a task",
)
def enqueue(request: Request, body: s.EnqueueBody, _who: Writer) -> Any:
    """Enqueue a task of a registered name; 200 with the first task for an idempotent repeat."""
    _storable("body", body.model_dump(mode="json"))
    view, created = _app(request).submit(TaskRequest(**body.model_dump()))
    out = s.TaskOut.model_validate(s.task_json(view)).model_dump(mode="json")
    return JSONResponse(out, status_code=201 if created else 200)


@router.get("/tasks", response_model=s.TaskPage, summary="List tasks, newest first")
def list_tasks(
    request: Request,
    _who: Reader,
    status: Annotated[str | None, Query(max_length=32)] = None,
    name: Annotated[str | None, Query(max_length=128)] = None,
    subject: Annotated[str | None, Query(max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Any:
    """List tasks, newest first; `next_cursor` (if not null) fetches the next page."""
    found = _app(request).list_tasks(status, name, limit + 1, subject, decode_cursor(cursor))
    page = found[:limit]
    more = len(found) > limit
    return {
        "items": [s.task_json(t) for t in page],
        "next_cursor": encode_cursor(page[-1].task_id) if more else None,
    }


@router.get(
    "/tasks/{task_id}", response_model=s.TaskOut, responses=responses(404), summary="One task"
)
def get_task(request: Request, task_id: TaskId, _who: Reader) -> Any:
    """The task with its steps and annotations."""
    return s.task_json(_app(request).get_task(task_id))


@router.patch(
    "/tasks/{task_id}",
    response_model=s.TaskOut,
    responses={**_BODY, **responses(404)},
    summary="Change a task's reason and tags",
)
def patch_task(request: Request, task_id: TaskId, body: s.TaskPatch, _who: Writer) -> Any:
    """Change `reason` and/or `tags`; nothing else of a task can be changed."""
    _storable("body", body.model_dump(mode="json"))
    return s.task_json(_app(request).update_task(task_id, body.reason, body.tags))


@router.delete(
    "/tasks/{task_id}",
    response_model=s.TaskOut,
    responses=responses(403, 404, 409),
    summary="Cancel a task",
)
def cancel_task(request: Request, task_id: TaskId, _who: Writer) -> Any:
    """Cancel the task and its unfinished steps (409 if it already finished)."""
    return s.task_json(_app(request).cancel(task_id))


@router.post(
    "/tasks/{task_id}/retry",
    response_model=s.TaskOut,
    responses=responses(403, 404, 409),
    summary="Retry the failed steps",
)
def retry_task(request: Request, task_id: TaskId, _who: Writer) -> Any:
    """Give the steps in final error a fresh attempt budget; the task resumes."""
    return s.task_json(_app(request).retry(task_id))


@router.post(
    "/tasks/{task_id}/resume",
    response_model=s.TaskOut,
    responses=responses(403, 404, 409),
    summary="Resume a paused task",
)
def resume_task(request: Request, task_id: TaskId, _who: Writer) -> Any:
    """Resume a paused task: its steps start again (409 if it is not paused)."""
    return s.task_json(_app(request).resume(task_id))


@router.post(
    "/tasks/{task_id}/events/{event}",
    response_model=s.TaskOut,
    responses={**_BODY, **responses(404, 409, 422)},
    summary="Signal an event to a task",
)
def signal_task(
    request: Request,
    task_id: TaskId,
    event: Annotated[str, Path(min_length=1, max_length=128)],
    _who: Writer,
    payload: Annotated[Any, Body()] = None,
) -> Any:
    """Store an event (the body is its JSON payload) and nudge the task.

    404: no such task; 409: the task is final; 422: no step of it waits for the event.
    """
    _storable("payload", payload)
    _app(request).signal(task_id, event, payload)
    return s.task_json(_app(request).get_task(task_id))


@router.get(
    "/tasks/{task_id}/history",
    response_model=s.HistoryPage,
    responses=responses(404),
    summary="A task's audit trail",
)
def task_history(request: Request, task_id: TaskId, _who: Reader) -> Any:
    """Every status change of the task and its steps, oldest first."""
    return {"items": [s.transition_json(t) for t in _app(request).history(task_id)]}


@router.get(
    "/tasks/{task_id}/steps/{step}",
    response_model=s.StepOut,
    responses=responses(404),
    summary="One step",
)
def get_step(request: Request, task_id: TaskId, step: StepName, _who: Reader) -> Any:
    """One step of a task."""
    return _step(_app(request), task_id, step)


@router.patch(
    "/tasks/{task_id}/steps/{step}",
    response_model=s.StepOut,
    responses={**_BODY, **responses(404, 409)},
    summary="Change a step's retry_limit and inputs",
)
def patch_step(
    request: Request, task_id: TaskId, step: StepName, body: s.StepPatch, _who: Writer
) -> Any:
    """Change `retry_limit` and/or `inputs` of a step that has not completed (else 409)."""
    _storable("body", body.model_dump(mode="json"))
    app = _app(request)
    app.update_step(task_id, step, body.retry_limit, body.inputs)
    return _step(app, task_id, step)


@router.post(
    "/tasks/{task_id}/steps/{step}/resolve",
    response_model=s.StepOut,
    responses={**_BODY, **responses(404, 409)},
    summary="Resolve a step by hand",
)
def resolve_step(
    request: Request,
    task_id: TaskId,
    step: StepName,
    _who: Writer,
    results: Annotated[dict[str, Any] | None, Body()] = None,
) -> Any:
    """Mark the step `resolved_manually`; the body (optional) is its results object."""
    _storable("results", results)
    app = _app(request)
    app.resolve_step(task_id, step, results)
    return _step(app, task_id, step)


@router.delete(
    "/tasks/{task_id}/steps/{step}",
    response_model=s.StepOut,
    responses=responses(403, 404, 409),
    summary="Cancel one step",
)
def cancel_step(request: Request, task_id: TaskId, step: StepName, _who: Writer) -> Any:
    """Cancel a pending or failed step (409 if it is running or finished)."""
    app = _app(request)
    app.cancel_step(task_id, step)
    return _step(app, task_id, step)


@router.get("/annotations", response_model=s.AnnotationPage, summary="Annotations, for reporting")
def list_annotations(
    request: Request,
    _who: Reader,
    type: Annotated[str | None, Query(max_length=128)] = None,
    task_id: Annotated[int | None, Query(ge=1, le=s.MAX_ID)] = None,
    contains: Annotated[
        str | None, Query(max_length=4096, description='a JSON object, e.g. {"region": "eu"}')
    ] = None,
) -> Any:
    """Annotations filtered by type, task and JSON containment."""
    pattern = None
    if contains is not None:
        try:
            pattern = json.loads(contains)
        except (ValueError, RecursionError):
            raise ProblemError(422, "contains is not valid JSON", kind="validation") from None
    found = _app(request).annotations(type, task_id, pattern)
    return {"items": [s.annotation_json(a) for a in found]}


def handler_json(reg: RegisteredTask) -> dict[str, Any]:
    """A registered handler version and its DAG as JSON."""
    schema = reg.handler.context_schema
    return {
        "name": reg.name,
        "version": reg.version,
        "context_schema": dict(schema) if schema is not None else None,
        "steps": [
            {
                "name": t.name,
                "depends_on": list(t.depends_on),
                "dependent_system": t.dependent_system,
                "description": t.description,
                "retryable": t.retryable,
                "retry_limit": t.retry_limit,
                "skippable": t.skippable,
                "transactional": t.transactional,
            }
            for t in reg.steps.values()
        ],
        "edges": handler_edges(reg),
        "branches": [
            {"step": t.name, "label": label, "steps": list(names)}
            for t in reg.steps.values()
            for label, names in (t.branches or {}).items()
        ],
    }


@router.get("/handlers", response_model=s.HandlerPage, summary="Registered task handlers")
def handlers(request: Request, _who: Reader) -> Any:
    """Every registered task handler version with its DAG (steps, edges and branches)."""
    return {"items": [handler_json(r) for r in _app(request).factory.registered()]}
