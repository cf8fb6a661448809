"""`tasker demo --serve`: after the demo, the dashboard on the demo's database."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from web_support import free_port


def _lines(process: subprocess.Popen[str]) -> tuple[queue.Queue[str], threading.Thread]:
    """The process's output, line by line, read by a thread (so the test can time out)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return lines, reader


def _until(lines: queue.Queue[str], pattern: str, seen: list[str]) -> re.Match[str]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_demo_serve_shows_the_demo_tasks_to_the_printed_token_only(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """Given `tasker demo --serve`, when the demo has run, then the dashboard serves on
    127.0.0.1 with a one-off token it printed: with it, `/` lists the demo's orders and a
    task page draws the order's DAG; without it (or with another token), nothing is
    shown; and SIGTERM or Ctrl-C (SIGINT) stops it cleanly, exit 0 and no traceback."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tasker",
            "demo",
            "--dir",
            str(tmp_path),
            "--serve",
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:
        lines, reader = _lines(process)
        where = _until(lines, r"dashboard: (http://\S+)/ ", seen).group(1)
        token = _until(lines, r"^token: (\S+)$", seen).group(1)
        assert where == f"http://127.0.0.1:{port}"
        assert "5 complete" in "".join(seen)  # the demo ran first
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{where}/health", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None, "".join(seen)
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=where, timeout=30) as c:
            listing = c.get("/", headers=auth)
            assert listing.status_code == 200
            assert "order_fulfillment" in listing.text
            first = c.get("/api/v1/tasks?limit=1", headers=auth).json()["items"][0]
            page = c.get(f"/tasks/{first['task_id']}", headers=auth)
            assert page.status_code == 200
            assert "<svg" in page.text and "fraud_review" in page.text
            for headers in ({}, {"Authorization": "Bearer not-the-token"}):
                assert c.get("/api/v1/tasks", headers=headers).status_code == 401
                assert c.get("/", headers=headers).status_code in (303, 401)
    finally:
        process.send_signal(stop)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    reader.join(10)  # it has read the last lines once the pipe is at its end
    assert process.stdout is not None
    process.stdout.close()
    while not lines.empty():
        seen.append(lines.get())
    out = "".join(seen)
    assert process.returncode == 0, out
    assert "dashboard stopped" in out and "Traceback" not in out, out
