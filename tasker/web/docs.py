"""The API's documentation pages: Swagger UI at `/docs` and ReDoc at `/redoc`, offline.

Like the dashboard (and `/openapi.json`) they need a `read` token: a bearer token, or
the dashboard's session cookie, since a person opens them in a browser. They read the
spec from `/docs/openapi.json`, which takes the same credentials (the JSON API's own
`/openapi.json` takes bearer tokens only). Swagger UI's and ReDoc's scripts and styles
are the copies the `fastapi-offline` package ships, served from `/docs/assets/` (with
the same credentials), never from a CDN, so the pages work with no internet; a
Content-Security-Policy lets them run scripts from this server only (Swagger UI's
start-up script is served as `/docs/assets/swagger-init.js`, not inlined). "Authorize"
in Swagger UI takes a token to try the endpoints with.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from tasker.web.dashboard import login_redirect, who
from tasker.web.problems import ProblemError

router = APIRouter(include_in_schema=False)

SPEC = "/docs/openapi.json"
TITLE = "tasker API"
ASSETS = "/docs/assets"
#: The folder of Swagger UI's and ReDoc's files in the `fastapi-offline` package.
ASSET_DIR = Path(fastapi_offline.__file__).parent / "static"
INIT = "swagger-init.js"
#: Scripts from this server only; ReDoc builds its search worker from a blob.
CSP = (
    "default-src 'none'; script-src 'self'; worker-src 'self' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_INLINE = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _denied(request: Request) -> bool:
    return who(request) is None


def _page(request: Request, html: str) -> Response:
    if _denied(request):
        return login_redirect(request)
    return HTMLResponse(
        html,
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": CSP,
        },
    )


@functools.cache
def _swagger() -> tuple[str, str]:
    """Swagger UI's page, its inline start-up script moved out: (page, script)."""
    html = bytes(
        get_swagger_ui_html(
            openapi_url=SPEC,
            title=TITLE,
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        ).body
    ).decode()
    scripts = _INLINE.findall(html)
    page = _INLINE.sub("", html).replace(
        "</body>", f'<script src="{ASSETS}/{INIT}"></script>\n</body>'
    )
    return page, "\n".join(scripts)


@router.get("/docs")
def swagger_ui(request: Request) -> Response:
    """Swagger UI over the API's OpenAPI document (a login page without credentials)."""
    return _page(request, _swagger()[0])


@router.get("/redoc")
def redoc(request: Request) -> Response:
    """ReDoc over the API's OpenAPI document (a login page without credentials)."""
    html = get_redoc_html(
        openapi_url=SPEC,
        title=TITLE,
        redoc_js_url=f"{ASSETS}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS}/favicon.png",
        with_google_fonts=False,
    )
    return _page(request, bytes(html.body).decode())


def _refuse() -> ProblemError:
    return ProblemError(401, "a token is required: log in at /login", kind="unauthorized")


@router.get(f"{ASSETS}/{{name}}")
def asset(request: Request, name: str) -> Response:
    """A file of Swagger UI or ReDoc, or Swagger UI's start-up script.

    Raises:
        ProblemError: 401 without a known bearer token or session cookie; 404 for a
            name that is none of those files.
    """
    if _denied(request):
        raise _refuse()
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
    if name == INIT:
        return Response(_swagger()[1], media_type="text/javascript", headers=headers)
    found = {p.name: p for p in ASSET_DIR.iterdir() if p.is_file()}
    if name not in found:
        raise ProblemError(404, f"no documentation asset {name!r}", kind="not-found")
    return FileResponse(found[name], headers=headers)


@router.get(SPEC)
def spec(request: Request) -> Any:
    """The OpenAPI document, for the pages: the one `/openapi.json` serves.

    Raises:
        ProblemError: 401 without a known bearer token or session cookie.
    """
    if _denied(request):
        raise _refuse()
    return JSONResponse(request.app.state.openapi())
