"""The app of `test_lost_control.py`: a step asks for flow control and its worker dies
before the request is recorded.

The step `review` logs each run (its attempt and reattempt counts) to `runs.jsonl` in
`LOST_CONTROL_DIR`, then asks for the control request named by the task's context
(`pause`, `reattempt`, `skip` or `cancel`) until the task has been resumed (context flag
`approved` is read from the step's inputs, which a steering call can set), when it returns.

The first run's worker is lost between the handler's request and its record: an observer
(called on the step's thread once the handler has returned, before the outcome is
written) SIGKILLs its own process the first time it sees a flow request, leaving a
`killed` marker. `make_app` reads `LOST_CONTROL_DIR`, `LOST_CONTROL_CLOCK` (the start of
a FakeClock shared with the test) and the `TASKER_*` environment.
"""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime
from pathlib import Path
from typing import Any

from tasker import Observer, StepTemplate, Tasker, TaskHandler
from tasker.testing.clock import FakeClock

#: Attempts of `review`: enough for the lost run and the ones after it.
RETRY_LIMIT = 3


def _folder() -> Path:
    return Path(os.environ["LOST_CONTROL_DIR"])


def review(task: Any, sequence: Any, step: Any) -> dict[str, Any]:
    """Log the run; ask for the task's control request unless approved."""
    run = {"pid": os.getpid(), "attempt": step.attempts, "reattempts": step.reattempts}
    with (_folder() / "runs.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(run) + "\n")
    if step.inputs.get("approved"):
        return {"approved": True}
    kind = task.context["request"]
    if kind == "pause":
        task.pause("needs a person")
    if kind == "cancel":
        task.cancel("not wanted")
    if kind == "skip":
        step.skip("not needed")
    step.reattempt(60)


def after(task: Any, sequence: Any, step: Any) -> dict[str, Any]:
    """The step after `review` (runs once `review` is complete or skipped)."""
    return {"after": True}


class LostControl(TaskHandler):
    """review -> after."""

    name = "lost_control"
    step_templates = [  # noqa: RUF012
        StepTemplate(name="review", handler=review, retry_limit=RETRY_LIMIT),
        StepTemplate(name="after", handler=after, depends_on=["review"]),
    ]


class DieOnFirstRequest(Observer):
    """SIGKILL this process the first time a handler asks for flow control."""

    def on_attempt_finished(
        self,
        task_id: int,
        task: str,
        step: str,
        ok: bool,
        flow: str | None,
        seconds: float,
        error: dict[str, Any] | None,
    ) -> None:
        marker = _folder() / "killed"
        if flow is not None and not marker.exists():
            marker.write_text(f"{os.getpid()} {flow}\n")
            os.kill(os.getpid(), signal.SIGKILL)


def make_app(**settings: Any) -> Tasker:
    """The app on the shared FakeClock, with the dying observer."""
    start = datetime.fromisoformat(os.environ["LOST_CONTROL_CLOCK"])
    app = Tasker(clock=FakeClock(start), **settings)
    app.register(LostControl)
    app.observe(DieOnFirstRequest())
    return app
