"""`tasker serve`: it refuses to start without tokens, and --insecure-no-auth is local only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from web_support import free_port, serving, write_app


def test_serve_refuses_to_start_without_tokens(tmp_path: Path) -> None:
    """Given no TASKER_API_TOKENS, when `tasker serve` starts, then it exits 2 saying
    how to configure tokens; with --insecure-no-auth on another host it refuses too."""
    env = {
        **write_app(tmp_path),
        "TASKER_DATABASE_URL": f"sqlite:///{tmp_path}/s.db",
        "PATH": "/usr/bin:/bin",
    }
    base = [sys.executable, "-m", "tasker", "serve", "webapp:app", "--port", str(free_port())]
    r = subprocess.run(base, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "TASKER_API_TOKENS" in r.stderr and "--insecure-no-auth" in r.stderr
    r = subprocess.run(
        [*base, "--insecure-no-auth", "--host", "0.0.0.0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "127.0.0.1 only" in r.stderr


def test_insecure_no_auth_serves_writes_without_a_token_on_localhost(tmp_path: Path) -> None:
    """Given --insecure-no-auth, when a client without a token enqueues, then it is
    accepted; the server listens on 127.0.0.1."""
    with serving(
        tmp_path, f"sqlite:///{tmp_path}/i.db", "--insecure-no-auth", env={"TASKER_API_TOKENS": ""}
    ) as live:
        assert live.url.startswith("http://127.0.0.1:")
        r = httpx.post(f"{live.url}/api/v1/tasks", json={"name": "greet", "context": {"who": "z"}})
        assert r.status_code == 201, r.text
