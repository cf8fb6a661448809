"""RFC 9457 problem details: every error of the HTTP API is `application/problem+json`."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from tasker import errors

PROBLEM_TYPE = "application/problem+json"


class Problem(BaseModel):
    """An RFC 9457 problem: `type`, `title`, `status`, `detail`, and `errors` if any."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    errors: list[Any] | None = None


class ProblemError(Exception):
    """Raised by a route to answer with a problem body."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        errors: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.errors = errors
        self.headers = headers


def problem(
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    errors: list[Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A problem+json response; `kind` names the problem type (default: the status)."""
    title = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": f"urn:tasker:problem:{kind or title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_TYPE, headers=headers)


#: Tasker errors -> HTTP status and problem kind; the first match (most specific) wins.
_STATUS: list[tuple[type[Exception], int, str]] = [
    (errors.NotFoundError, 404, "not-found"),
    (errors.InvalidStateError, 409, "invalid-state"),
    (errors.InvalidTransitionError, 409, "invalid-state"),
    (errors.IdempotencyConflictError, 409, "idempotency-conflict"),
    (errors.DuplicateTaskError, 409, "duplicate-subject"),
    (errors.ContextValidationError, 422, "invalid-context"),
    (errors.UnknownTaskError, 422, "unknown-task"),
    (errors.InvalidRequestError, 422, "invalid-request"),
]


def from_tasker_error(exc: errors.TaskerError) -> JSONResponse:
    """The problem response for an error a tasker call raised (500 for an unexpected one)."""
    for cls, status, kind in _STATUS:
        if isinstance(exc, cls):
            extra = getattr(exc, "errors", None) if cls is errors.ContextValidationError else None
            return problem(status, str(exc), kind=kind, errors=extra)
    return problem(500, "internal error", kind="internal")


def _validation_errors(exc: RequestValidationError) -> JSONResponse:
    found = []
    for e in exc.errors():
        if e.get("type") == "json_invalid":
            where = e.get("ctx", {}).get("error", "")
            return problem(400, f"the body is not valid JSON: {where}", kind="malformed-json")
        loc = ".".join(str(p) for p in e.get("loc", ()))
        found.append(f"{loc}: {e.get('msg', 'invalid')}")
    return problem(422, "; ".join(found) or "invalid request", kind="validation", errors=found)


def install(app: FastAPI) -> None:
    """Answer every error with a problem body."""

    async def on_problem(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return problem(
            exc.status, exc.detail, kind=exc.kind, errors=exc.errors, headers=exc.headers
        )

    async def on_tasker(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.TaskerError)
        return from_tasker_error(exc)

    async def on_validation(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _validation_errors(exc)

    async def on_http(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        kind = getattr(exc, "kind", None)
        return problem(exc.status_code, str(exc.detail), kind=kind, headers=exc.headers)

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(errors.TaskerError, on_tasker)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


#: The OpenAPI `responses` entry of each problem status an endpoint may answer.
def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for problem statuses (moved to problem+json by `openapi_fix`)."""
    return {s: {"model": Problem, "description": HTTPStatus(s).phrase} for s in statuses}


def openapi_fix(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare every 4xx/5xx body of the schema as `application/problem+json`."""
    for path in schema.get("paths", {}).values():
        for op in path.values():
            for status, resp in op.get("responses", {}).items():
                content = resp.get("content")
                if str(status)[0] in "45" and content and "application/json" in content:
                    content[PROBLEM_TYPE] = content.pop("application/json")
    return schema
