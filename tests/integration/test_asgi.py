"""`app.asgi()` in-process (the ASGI app a user mounts in their own server), on SQLite and
PostgreSQL: its configuration, and /health when a dependency is down."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from tasker import Tasker, errors


class _Client:
    """Calls an ASGI app in this process (httpx's ASGI transport, one event loop a call)."""

    def __init__(self, asgi) -> None:
        self.asgi = asgi

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.asgi)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.request(method, path, **kwargs)

        return asyncio.run(call())

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self.request("POST", path, **kwargs)


def _client(asgi) -> _Client:
    return _Client(asgi)


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_asgi_needs_tokens_and_valid_settings(backend: Tasker, monkeypatch) -> None:
    """Given no TASKER_API_TOKENS, when app.asgi() is built without tokens, then it
    refuses (naming the variable); a bad scope or body limit is refused too."""
    with pytest.raises(errors.ConfigurationError, match="TASKER_API_TOKENS"):
        backend.asgi()
    with pytest.raises(errors.ConfigurationError, match="scope"):
        backend.asgi(tokens={"t": "admin"})
    with pytest.raises(errors.ConfigurationError, match="max_body"):
        backend.asgi(tokens={"t": "read"}, max_body=0)
    monkeypatch.setenv("TASKER_API_MAX_BODY", "lots")
    with pytest.raises(errors.ConfigurationError, match="TASKER_API_MAX_BODY"):
        backend.asgi(tokens={"t": "read"})


def test_asgi_serves_with_tokens_from_the_environment(backend: Tasker, monkeypatch) -> None:
    """Given TASKER_API_TOKENS and a small TASKER_API_MAX_BODY, then a read token lists
    tasks, a write token's body over the limit is a 413 problem, and /health is ok."""
    monkeypatch.setenv("TASKER_API_TOKENS", "rt:read,wt:write")
    monkeypatch.setenv("TASKER_API_MAX_BODY", "64")
    with _client(backend.asgi()) as c:
        assert c.get("/api/v1/tasks", headers={"Authorization": "Bearer rt"}).json() == {
            "items": [],
            "next_cursor": None,
        }
        r = c.post(
            "/api/v1/tasks",
            headers={"Authorization": "Bearer wt"},
            json={"name": "x", "context": {"pad": "y" * 100}},
        )
        assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
        assert c.get("/health").json()["status"] == "ok"


def test_health_is_503_naming_a_broker_that_is_down(backend_url: str, clean_env) -> None:
    """Given an app whose Redis broker is not listening, when /health is asked, then 503
    with the broker check failed and the database check ok; /metrics still answers."""
    app = Tasker(database_url=backend_url, broker_url=f"redis://127.0.0.1:{_unused_port()}/0")
    try:
        app.migrate()
        with _client(app.asgi(tokens={"t": "read"})) as c:
            r = c.get("/health")
            assert r.status_code == 503
            body = r.json()
            assert body["status"] == "failing" and body["checks"]["database"] == "ok"
            assert body["checks"]["broker"].startswith("failed: ")
            assert "tasker_metrics_scrape_ok 1.0" in c.get("/metrics").text
    finally:
        app.close()
