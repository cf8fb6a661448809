"""Helpers of the web tests: an app module to serve, and a live `tasker serve` process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import tasker

WRITE_TOKEN = "w-" + "0123456789abcdef" * 2
READ_TOKEN = "r-" + "fedcba9876543210" * 2
TOKENS = f"{WRITE_TOKEN}:write,{READ_TOKEN}:read"

#: The app the server serves: `greet` (one step), `shipping` (a DAG whose `charge` step
#: fails for good on its first attempt of each task, and succeeds once retried) and
#: `wide` (50 steps in layers, for the dashboard's layout) and `gated` (its first step runs
#: until the file `marks/<task_id>.open` exists), `fanout` (its `fan_out` step spawns two
#: `gated` tasks and awaits them), `batch` (a `for_each` step over three items, the last
#: running until `marks/<task_id>.items` exists) and `stalled` (a 1 s task timeout while
#: its step runs for 3 s), `held` (its step pauses the task on its first run).
APP_MODULE = textwrap.dedent(
    """
    import os
    import time
    from pathlib import Path
    from tasker import PermanentError, StepTemplate, TaskHandler, Tasker

    MARKS = Path(os.environ["WEBAPP_MARKS"])

    def greet(task, sequence, step):
        return {"greeting": "hello " + task.context["who"]}

    def ok(task, sequence, step):
        return {"ok": True}

    def charge_once_failing(task, sequence, step):
        mark = MARKS / f"{task.task_id}.charged"
        if not mark.exists():
            mark.write_text("failed once")
            raise PermanentError("card declined (first attempt of every task fails)")
        return {"charged_cents": task.context.get("total_cents", 0)}

    def gated(task, sequence, step):
        # Runs until the test opens the gate (a file), so a page can watch it run.
        gate = MARKS / f"{task.task_id}.open"
        for _ in range(1200):
            if gate.exists():
                return {"gate": "opened"}
            time.sleep(0.05)
        raise PermanentError("the gate was never opened")

    class Greet(TaskHandler):
        name = "greet"
        context_schema = {
            "type": "object",
            "required": ["who"],
            "properties": {"who": {"type": "string"}},
        }
        step_templates = [StepTemplate(name="say", handler=greet)]

    class Shipping(TaskHandler):
        name = "shipping"
        version = "2.0.0"
        step_templates = [
            StepTemplate(name="validate", handler=ok, dependent_system="shop"),
            StepTemplate(name="charge", handler=charge_once_failing, depends_on=["validate"],
                         retry_limit=1, dependent_system="payments"),
            StepTemplate(name="pack", handler=ok, depends_on=["validate"], skippable=True),
            StepTemplate(name="ship", handler=ok, depends_on=["charge", "pack"]),
        ]

    class Gated(TaskHandler):
        name = "gated"
        step_templates = [
            StepTemplate(name="wait_for_gate", handler=gated),
            StepTemplate(name="after", handler=ok, depends_on=["wait_for_gate"]),
        ]

    def route(task, sequence, step):
        from tasker import Decision
        return Decision(task.context.get("speed", "standard"))

    class Approval(TaskHandler):
        name = "approval"
        step_templates = [
            StepTemplate(name="approve", wait_for="approved"),
            StepTemplate(name="route", handler=route, depends_on=["approve"],
                         branches={"express": ["fast"], "standard": ["slow"]}),
            StepTemplate(name="fast", handler=ok, depends_on=["route"]),
            StepTemplate(name="slow", handler=ok, depends_on=["route"]),
        ]

    def fan_out(task, sequence, step):
        from tasker import TaskRequest
        for lane in ("east", "west"):
            step.spawn(TaskRequest(name="gated", context={"lane": lane}), key=lane)
        return {"spawned": 2}

    class Fanout(TaskHandler):
        name = "fanout"
        step_templates = [
            StepTemplate(name="fan_out", handler=fan_out),
            StepTemplate(name="report", handler=ok, depends_on=["fan_out"]),
        ]

    def each(task, sequence, step):
        if step.item == "slow":
            gate = MARKS / f"{task.task_id}.items"
            for _ in range(1200):
                if gate.exists():
                    break
                time.sleep(0.05)
        return {"item": step.item}

    class Batch(TaskHandler):
        name = "batch"
        step_templates = [
            StepTemplate(name="each", handler=each, for_each=lambda t, s: ["a", "b", "slow"]),
        ]

    def slow(task, sequence, step):
        time.sleep(3)
        return {"late": True}

    class Stalled(TaskHandler):
        name = "stalled"
        timeout = 1
        step_templates = [StepTemplate(name="hold", handler=slow)]

    def pause_once(task, sequence, step):
        mark = MARKS / f"{task.task_id}.paused"
        if not mark.exists():
            mark.write_text("paused once")
            task.pause("a person looks first")
        return {"looked": True}

    class Held(TaskHandler):
        name = "held"
        step_templates = [StepTemplate(name="look", handler=pause_once)]

    class Wide(TaskHandler):
        name = "wide"
        step_templates = [StepTemplate(name="s00", handler=ok)] + [
            StepTemplate(name=f"s{i:02d}", handler=ok, depends_on=[f"s{(i - 1) // 7 * 7:02d}"])
            for i in range(1, 50)
        ]

    app = Tasker(backoff_base=0.05, backoff_max=0.2, sweep_seconds=0.5)
    app.register(Greet)
    app.register(Shipping)
    app.register(Wide)
    app.register(Gated)
    app.register(Approval)
    app.register(Fanout)
    app.register(Batch)
    app.register(Stalled)
    app.register(Held)
    app.migrate()
    """
)


def free_port() -> int:
    """A TCP port that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A running `tasker serve`."""

    url: str
    process: subprocess.Popen[str]
    folder: Path

    def client(self, token: str | None = WRITE_TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def write_app(folder: Path) -> dict[str, str]:
    """Write the app module into `folder`; returns the environment that imports it.

    The server imports the `tasker` these tests import (a worktree's, not only the
    installed one).
    """
    (folder / "webapp.py").write_text(APP_MODULE)
    marks = folder / "marks"
    marks.mkdir(exist_ok=True)
    source = Path(tasker.__file__).resolve().parent.parent
    return {"PYTHONPATH": os.pathsep.join((str(folder), str(source))), "WEBAPP_MARKS": str(marks)}


@contextmanager
def serving(
    folder: Path, database_url: str, *extra: str, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Run `tasker serve webapp:app --worker` on a free port until the block ends."""
    port = free_port()
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TASKER_")},
        **write_app(folder),
        "TASKER_DATABASE_URL": database_url,
        "TASKER_API_TOKENS": TOKENS,
        **(env or {}),
    }
    log = (folder / f"serve-{port}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tasker", "serve", "webapp:app", "--port", str(port), *extra],
        cwd=folder,
        env=full,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process, folder / f"serve-{port}.log")
        yield Server(url, process, folder)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_until_up(url: str, process: subprocess.Popen[str], log: Path) -> None:
    """Poll /health until the server answers; fail with its log if it exits or hangs."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"tasker serve exited {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"tasker serve did not answer in 60 s:\n{log.read_text()}")


def wait_for(client: httpx.Client, task_id: int, *statuses: str, timeout: float = 30) -> Any:
    """Poll the API until the task is in one of `statuses`; returns its JSON."""
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/tasks/{task_id}").json()
        if body["status"] in statuses:
            return body
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not reach {statuses}: {body}")
