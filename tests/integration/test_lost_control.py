"""A flow-control request whose worker is lost before it is recorded, on both stores.

The contract: a step's control request (pause, reattempt, skip, cancel) takes effect
once its outcome is recorded, in the engine's fenced write. A worker lost between the
handler's request and that write leaves the step `in_progress` under an expiring lease,
like any other lost worker: once the lease expires the run counts as a failed attempt
("worker lost") and the step runs again after its backoff, where it can ask again.

The worker is a real process (`lost_control_app.py`) that SIGKILLs itself from an
observer called after the handler returned and before the outcome is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasker import Tasker, TaskRequest
from tasker.testing.clock import FakeClock

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import lost_control_app  # noqa: E402

LEASE = 5.0


def _run_dying_worker(url: str, folder: Path, clock: FakeClock) -> subprocess.CompletedProcess[str]:
    """One `run_until_idle()` in a new process that is killed by the flow request."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
        TASKER_DATABASE_URL=url,
        TASKER_LEASE_SECONDS=str(LEASE),
        LOST_CONTROL_DIR=str(folder),
        LOST_CONTROL_CLOCK=clock().isoformat(),
    )
    code = "import lost_control_app as m; m.make_app().run_until_idle()"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def _runs(folder: Path) -> list[dict[str, int]]:
    lines = (folder / "runs.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture
def lost_request(backend_url, clock, tmp_path, clean_env, monkeypatch):  # type: ignore[no-untyped-def]
    """Enqueue a task whose step asks for `kind`, run it in a worker that dies before the
    request is recorded; return (app in this process on the same clock, task id)."""
    monkeypatch.setenv("LOST_CONTROL_DIR", str(tmp_path))
    monkeypatch.setenv("LOST_CONTROL_CLOCK", clock().isoformat())
    apps: list[Tasker] = []

    def run(kind: str) -> tuple[Tasker, int]:
        app = Tasker(database_url=backend_url, clock=clock, lease_seconds=LEASE)
        apps.append(app)
        app.migrate()
        app.register(lost_control_app.LostControl)
        t = app.enqueue(TaskRequest(name="lost_control", context={"request": kind}))
        done = _run_dying_worker(backend_url, tmp_path, clock)
        assert done.returncode == -9, done.stdout + done.stderr
        assert (tmp_path / "killed").read_text().split()[1] == kind
        return app, t.task_id

    yield run
    for app in apps:
        app.close()


def _lost_then_rerun(app: Tasker, clock: FakeClock, task_id: int) -> None:
    """Nothing is recorded while the dead worker's lease runs; after it, the run is a
    failed attempt ("worker lost") and the step runs again after its backoff."""
    lost = app.get_task(task_id)
    assert (lost.status, lost.steps["review"].status) == ("in_progress", "in_progress")
    assert lost.steps["review"].attempts == 1
    clock.advance(LEASE + 1)
    app.run_until_idle()
    failed = app.get_task(task_id).steps["review"]
    assert (failed.status, failed.attempts, failed.reattempts) == ("error", 1, 0)
    assert failed.error is not None and failed.error["message"].startswith("worker lost")
    clock.advance(app.settings.backoff_max)
    app.run_until_idle()


def test_a_pause_whose_worker_is_lost_reruns_the_step_which_pauses_again(lost_request, clock):
    """Given a step that pauses its task and whose worker is killed before the pause is
    recorded, When the lease expires, Then the task is not paused: the run is a failed
    attempt (worker lost) and the step runs again, with one attempt used; its second
    request pauses the task (the pause run uses no attempt) and a resume completes it."""
    app, task_id = lost_request("pause")
    _lost_then_rerun(app, clock, task_id)
    paused = app.get_task(task_id)
    assert paused.status == "paused"
    assert (paused.steps["review"].status, paused.steps["review"].attempts) == ("pending", 1)
    assert paused.steps["review"].waiting_for == "paused"
    reasons = [h.reason for h in app.history(task_id) if h.step == "review"]
    lost_at = next(i for i, r in enumerate(reasons) if "worker lost" in r.lower())
    paused_at = next(i for i, r in enumerate(reasons) if r.startswith("pause requested"))
    assert lost_at < paused_at
    app.update_step(task_id, "review", inputs={"request": "pause", "approved": True})
    app.resume(task_id)
    app.run_until_idle()
    done = app.get_task(task_id)
    assert done.status == "complete"
    assert (done.steps["review"].attempts, done.steps["review"].results) == (
        2,
        {"approved": True},
    )
    runs = _runs(Path(os.environ["LOST_CONTROL_DIR"]))
    assert [r["attempt"] for r in runs] == [1, 2, 2]


def test_a_reattempt_whose_worker_is_lost_uses_an_attempt_and_is_asked_again(lost_request, clock):
    """Given a step that asks to run again in 60 s and whose worker is killed before that
    is recorded, When the lease expires, Then the lost run counts as an attempt (not a
    reattempt); the re-run's request is recorded: a reattempt, no further attempt."""
    app, task_id = lost_request("reattempt")
    _lost_then_rerun(app, clock, task_id)
    step = app.get_task(task_id).steps["review"]
    assert (step.status, step.attempts, step.reattempts) == ("pending", 1, 1)
    assert step.waiting_for == "time"


@pytest.mark.parametrize(
    ("kind", "task_status", "step_status"),
    [
        ("skip", "complete", "skipped"),
        ("cancel", "cancelled", "cancelled"),
    ],
)
def test_a_skip_or_cancel_whose_worker_is_lost_takes_effect_on_the_rerun(
    lost_request, clock, kind, task_status, step_status
):
    """Given a step that skips itself (or cancels its task) and whose worker is killed
    before that is recorded, When the lease expires, Then nothing was skipped or cancelled
    by the lost run; the re-run asks again and that request takes effect."""
    app, task_id = lost_request(kind)
    _lost_then_rerun(app, clock, task_id)
    done = app.get_task(task_id)
    assert (done.status, done.steps["review"].status) == (task_status, step_status)
    assert done.steps["review"].attempts == 1
    runs = _runs(Path(os.environ["LOST_CONTROL_DIR"]))
    assert [r["attempt"] for r in runs] == [1, 2]
