"""The HTTP interfaces of a tasker app: the JSON API, the dashboard, health and metrics.

`create_app(tasker)` (or `Tasker.asgi()`) builds the ASGI application that
`tasker serve` runs under uvicorn.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tasker.errors import ConfigurationError
from tasker.web import api, dashboard, docs, ops, problems
from tasker.web.auth import TokenBook

if TYPE_CHECKING:
    from tasker.app import Tasker

DEFAULT_MAX_BODY = 1024 * 1024


def max_body_from_env() -> int:
    """`TASKER_API_MAX_BODY` in bytes, or 1 MiB.

    Raises:
        ConfigurationError: it is not a positive integer.
    """
    raw = os.environ.get("TASKER_API_MAX_BODY")
    if raw is None or not raw.strip():
        return DEFAULT_MAX_BODY
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ConfigurationError(f"TASKER_API_MAX_BODY must be a positive integer, got {raw!r}")
    return int(raw)


class BodyTooLarge(StarletteHTTPException):
    """The request body is over the limit (an HTTP error, so body parsing passes it on)."""

    kind = "too-large"

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the limit of {limit} bytes")


class BodyLimit:
    """ASGI middleware: answer 413 for a body over `limit` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count the body as it streams in."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            status = 413 if declared.isdigit() else 400
            detail = (
                f"the request body is over the limit of {self.limit} bytes"
                if status == 413
                else "the Content-Length header is not a number"
            )
            response = problems.problem(status, detail, kind="too-large" if status == 413 else None)
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


def create_app(
    tasker: Tasker,
    tokens: Mapping[str, str] | None = None,
    max_body: int | None = None,
    insecure_no_auth: bool = False,
) -> FastAPI:
    """The ASGI application of a tasker app.

    Args:
        tasker: the app whose tasks it serves.
        tokens: token -> scope (`read` or `write`); None reads `TASKER_API_TOKENS`.
        max_body: the largest request body in bytes (None: `TASKER_API_MAX_BODY` or 1 MiB).
        insecure_no_auth: serve without tokens, every caller with the write scope
            (only for a server bound to 127.0.0.1).

    Raises:
        ConfigurationError: no tokens and not `insecure_no_auth`, a bad scope, or a
            bad body limit.
    """
    book = TokenBook(tokens if not insecure_no_auth else {}, insecure=insecure_no_auth)
    if book.empty and not insecure_no_auth:
        raise ConfigurationError(
            "no API tokens: set TASKER_API_TOKENS=token:write,other:read (or pass tokens=), "
            "or serve with --insecure-no-auth on 127.0.0.1"
        )
    limit = max_body if max_body is not None else max_body_from_env()
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(f"max_body must be a positive integer, got {limit!r}")

    app = FastAPI(
        title="tasker",
        version=_version(),
        description="Enqueue, inspect and steer tasker tasks. Errors are RFC 9457 problems.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.tasker = tasker
    app.state.book = book
    app.state.metrics = ops.registry_for(tasker)
    problems.install(app)
    app.include_router(api.router)
    app.include_router(ops.router)
    app.include_router(dashboard.router)
    app.include_router(docs.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problems.openapi_fix(app.openapi())
        return app.openapi_schema

    app.state.openapi = openapi  # the docs pages serve it too (`tasker.web.docs`)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(api.principal)])
    def openapi_json() -> JSONResponse:
        return JSONResponse(openapi())

    app.add_middleware(BodyLimit, limit=limit)
    return app


def _version() -> str:
    from tasker import __version__

    return __version__
