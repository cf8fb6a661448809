"""`tasker serve`: it refuses to start without tokens, and --insecure-no-auth is local only."""

from __future__ import annotations

import subprocess
import sys
import time
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


def _spawned_workers(pid: int) -> list[int]:
    """The multiprocessing children of `pid` (uvicorn's worker processes), from /proc."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    found = []
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            found.append(child)
    return found


def test_workers_serve_from_that_many_processes(backend_url: str, tmp_path: Path) -> None:
    """Given `tasker serve --workers 2` with tokens, when clients enqueue and read tasks,
    then every request is answered (a task enqueued is read back whole), two worker
    processes serve, the token check holds in them, and stopping the server stops both."""
    url = backend_url if not backend_url.startswith("sqlite") else f"sqlite:///{tmp_path}/w.db"
    with serving(tmp_path, url, "--workers", "2") as live:
        workers = _spawned_workers(live.process.pid)
        assert len(workers) == 2, workers
        with live.client() as c:
            ids = []
            for n in range(20):
                r = c.post("/api/v1/tasks", json={"name": "greet", "context": {"who": f"w{n}"}})
                assert r.status_code == 201, r.text
                ids.append(r.json()["task_id"])
            for tid in ids:
                body = c.get(f"/api/v1/tasks/{tid}").json()
                assert body["task_id"] == tid and set(body["steps"]) == {"say"}
        assert httpx.get(f"{live.url}/api/v1/tasks/{ids[0]}").status_code == 401
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if Path(f"/proc/{w}").exists()]


def test_workers_refuses_bad_counts_and_an_inline_worker(tmp_path: Path) -> None:
    """Given --workers 0, or --workers 2 with --worker, when `tasker serve` starts, then it
    exits 2 naming the problem (an engine inside one of several HTTP processes is refused)."""
    env = {
        **write_app(tmp_path),
        "TASKER_DATABASE_URL": f"sqlite:///{tmp_path}/s.db",
        "TASKER_API_TOKENS": "t" * 20 + ":write",
        "PATH": "/usr/bin:/bin",
    }
    base = [sys.executable, "-m", "tasker", "serve", "webapp:app", "--port", str(free_port())]
    for extra, says in (
        (["--workers", "0"], "--workers"),
        (["--workers", "2", "--worker"], "tasker worker"),
    ):
        r = subprocess.run(
            [*base, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 2 and says in r.stderr, r.stderr
