"""The API docs pages (`/docs`, `/redoc` and their spec) through a real `tasker serve`."""

from __future__ import annotations

import re

import httpx
from web_support import READ_TOKEN, WRITE_TOKEN, Server

ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "swagger-init.js")


def test_the_docs_pages_need_a_token_and_describe_the_served_api(server: Server) -> None:
    """Given a live server, when a browser without credentials opens /docs or /redoc, then
    it is sent to the login form; with a read token (bearer, or the session cookie after
    /login) the pages are Swagger UI and ReDoc over /docs/openapi.json, which is the
    spec /openapi.json serves; the spec of the pages refuses a caller without a token;
    the dashboard links to /docs (Swagger UI's start-up script names the spec)."""
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
        init = reader.get("/docs/assets/swagger-init.js").text  # Swagger UI's start-up
        assert "/docs/assets/swagger-init.js" in swagger.text and "/docs/openapi.json" in init
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


def _references(html: str) -> list[str]:
    return re.findall(r'(?:src|href|spec-url)="([^"]*)"', html)


def test_the_docs_pages_load_only_local_assets_behind_the_token(server: Server) -> None:
    """Given a live server, when /docs and /redoc are fetched with a read token, then
    every script, style and icon they reference is a local /docs/assets/ URL (no CDN,
    no http(s):// URL), they hold no inline script, and a Content-Security-Policy allows
    scripts from the server only; each asset answers 200 with its content type to a read
    or write token (bearer or cookie), 401 without one, and an unknown name is a 404."""
    with server.client(READ_TOKEN) as reader:
        for page in ("/docs", "/redoc"):
            r = reader.get(page)
            assert r.status_code == 200
            refs = _references(r.text)
            assert refs and "http" not in r.text.replace("http-equiv", "")
            assert all(u.startswith("/docs/") for u in refs), refs
            assert "<script>" not in r.text  # every script has a src
            csp = r.headers["content-security-policy"]
            assert "script-src 'self';" in csp and "default-src 'none'" in csp
        used = set(_references(reader.get("/docs").text) + _references(reader.get("/redoc").text))
        for name in ASSETS:
            assert f"/docs/assets/{name}" in used, name
            r = reader.get(f"/docs/assets/{name}")
            assert r.status_code == 200 and len(r.content) > 0, name
            kind = "text/css" if name.endswith(".css") else "javascript"
            assert kind in r.headers["content-type"], name
        assert "SwaggerUIBundle" in reader.get("/docs/assets/swagger-init.js").text
        assert "/docs/openapi.json" in reader.get("/docs/assets/swagger-init.js").text
        missing = reader.get("/docs/assets/..%2Fcore.py")
        assert missing.status_code == 404
        assert reader.get("/docs/assets/nothing.js").status_code == 404
    with server.client(WRITE_TOKEN) as writer:
        assert writer.get("/docs/assets/swagger-ui.css").status_code == 200
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        for name in ASSETS:
            r = anon.get(f"/docs/assets/{name}")
            assert r.status_code == 401, name
            assert r.headers["content-type"].startswith("application/problem+json")
        anon.post("/login", data={"token": READ_TOKEN, "next": "/docs"})
        assert anon.get("/docs/assets/redoc.standalone.js").status_code == 200
