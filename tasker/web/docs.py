"""The API's documentation pages: Swagger UI at `/docs` and ReDoc at `/redoc`.

Like the dashboard (and `/openapi.json`) they need a `read` token: a bearer token, or
the dashboard's session cookie, since a person opens them in a browser. They read the
spec from `/docs/openapi.json`, which takes the same credentials (the JSON API's own
`/openapi.json` takes bearer tokens only). The pages load Swagger UI's and ReDoc's
scripts from the jsDelivr CDN, as FastAPI's do; "Authorize" in Swagger UI takes a
token to try the endpoints with.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse, Response

from tasker.web.dashboard import login_redirect, who
from tasker.web.problems import ProblemError

router = APIRouter(include_in_schema=False)

SPEC = "/docs/openapi.json"
TITLE = "tasker API"


def _page(request: Request, html: Response) -> Response:
    if who(request) is None:
        return login_redirect(request)
    html.headers["Cache-Control"] = "no-store"
    html.headers["X-Frame-Options"] = "DENY"
    return html


@router.get("/docs")
def swagger_ui(request: Request) -> Response:
    """Swagger UI over the API's OpenAPI document (a login page without credentials)."""
    return _page(request, get_swagger_ui_html(openapi_url=SPEC, title=TITLE))


@router.get("/redoc")
def redoc(request: Request) -> Response:
    """ReDoc over the API's OpenAPI document (a login page without credentials)."""
    return _page(request, get_redoc_html(openapi_url=SPEC, title=TITLE, with_google_fonts=False))


@router.get(SPEC)
def spec(request: Request) -> Any:
    """The OpenAPI document, for the pages: the one `/openapi.json` serves.

    Raises:
        ProblemError: 401 without a known bearer token or session cookie.
    """
    if who(request) is None:
        raise ProblemError(401, "a token is required: log in at /login", kind="unauthorized")
    return JSONResponse(request.app.state.openapi())
