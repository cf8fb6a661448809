"""The API docs pages (`/docs`, `/redoc` and their spec) through a real `tasker serve`."""

from __future__ import annotations

import httpx
from web_support import READ_TOKEN, Server


def test_the_docs_pages_need_a_token_and_describe_the_served_api(server: Server) -> None:
    """Given a live server, when a browser without credentials opens /docs or /redoc, then
    it is sent to the login form; with a read token (bearer, or the session cookie after
    /login) the pages are Swagger UI and ReDoc over /docs/openapi.json, which is the
    spec /openapi.json serves; the spec of the pages refuses a caller without a token;
    the dashboard links to /docs."""
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        for page in ("/docs", "/redoc"):
            r = anon.get(page)
            assert r.status_code == 303 and r.headers["location"] == f"/login?next={page}"
        r = anon.get("/docs/openapi.json")
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("application/problem+json")

    with server.client(READ_TOKEN) as reader:
        swagger = reader.get("/docs")
        assert swagger.status_code == 200 and "swagger-ui" in swagger.text
        assert "/docs/openapi.json" in swagger.text
        redoc = reader.get("/redoc")
        assert redoc.status_code == 200 and "redoc" in redoc.text.lower()
        assert "/docs/openapi.json" in redoc.text
        spec = reader.get("/openapi.json").json()
        assert reader.get("/docs/openapi.json").json() == spec
        assert "/api/v1/tasks" in spec["paths"]

    with httpx.Client(base_url=server.url, timeout=30) as browser:
        r = browser.post("/login", data={"token": READ_TOKEN, "next": "/docs"})
        assert r.status_code == 303 and r.headers["location"] == "/docs"
        assert browser.get("/docs").status_code == 200
        assert browser.get("/docs/openapi.json").json() == spec
        assert browser.get("/openapi.json").status_code == 401  # the API takes bearer tokens
        assert 'href="/docs"' in browser.get("/").text
