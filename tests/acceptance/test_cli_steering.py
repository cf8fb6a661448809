"""The steering commands (`cancel`, `retry`, `resume`, `resolve`, `signal`, `history`) as
run by a user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

APP_MODULE = textwrap.dedent(
    """
    import os
    from tasker import PermanentError, StepTemplate, TaskHandler, Tasker

    def charge(task, sequence, step):
        if task.context.get("pause") and not os.environ.get("CARD_CHECKED"):
            task.pause("waiting for a person to check the card")
        if task.context.get("fail"):
            raise PermanentError("card declined")
        return {"charged": True}

    def ship(task, sequence, step):
        return {"shipped": sequence.step("charge").results}

    class Order(TaskHandler):
        name = "order"
        step_templates = [
            StepTemplate(name="charge", handler=charge),
            StepTemplate(name="ship", handler=ship, depends_on=["charge"]),
        ]

    class Approval(TaskHandler):
        name = "approval"
        step_templates = [StepTemplate(name="approve", wait_for="approved")]

    app = Tasker(database_url=os.environ["TASKER_DATABASE_URL"])
    app.register(Order)
    app.register(Approval)
    """
)

# Run the app's work once in a subprocess, as a worker would (then exit).
RUN = "import sys, shopapp; shopapp.app.run_until_idle()"


@pytest.fixture
def shop(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "shopapp.py").write_text(APP_MODULE)
    return {
        **os.environ,
        "TASKER_DATABASE_URL": f"sqlite:///{tmp_path}/shop.db",
        "PYTHONPATH": str(tmp_path),
        "TASKER_APP": "shopapp",
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=120
    )


def tasker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run(env, "-m", "tasker", *args)


def failed_order(env: dict[str, str]) -> int:
    assert tasker(env, "migrate").returncode == 0
    out = tasker(env, "enqueue", "order", "--context", '{"fail": true}', "--json")
    assert out.returncode == 0, out.stderr
    task_id = int(json.loads(out.stdout)["task_id"])
    assert run(env, "-c", RUN).returncode == 0
    status = tasker(env, "status", str(task_id), "--json")
    assert status.returncode == 3 and json.loads(status.stdout)["status"] == "error"
    return task_id


def test_resolve_a_failed_step_then_the_task_completes(shop: dict[str, str]) -> None:
    """Given an order whose charge failed for good, when a person resolves the step with
    results from the command line, then the dependent step runs on them and the history
    shows every change with its reason."""
    task_id = failed_order(shop)
    out = tasker(shop, "resolve", str(task_id), "charge", "--results", '{"charged": "by hand"}')
    assert out.returncode == 0, out.stderr
    assert "resolved_manually" in out.stdout
    assert run(shop, "-c", RUN).returncode == 0
    done = json.loads(tasker(shop, "status", str(task_id), "--json").stdout)
    assert done["status"] == "complete"
    assert done["steps"]["ship"]["results"] == {"shipped": {"charged": "by hand"}}
    history = tasker(shop, "history", str(task_id), "--json")
    assert history.returncode == 0
    rows = json.loads(history.stdout)
    charge = [(r["from_status"], r["to_status"]) for r in rows if r["step"] == "charge"]
    assert charge[-1] == ("error", "resolved_manually")
    assert any("card declined" in r["reason"] for r in rows)
    table = tasker(shop, "history", str(task_id)).stdout
    assert "(task)" in table and "resolved_manually" in table


def test_retry_gives_the_failed_step_a_fresh_budget(shop: dict[str, str]) -> None:
    """Given a failed order, `tasker retry` makes the task live again (it fails again, as
    its context still says so, with a second attempt recorded)."""
    task_id = failed_order(shop)
    out = tasker(shop, "retry", str(task_id), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] != "error"
    assert run(shop, "-c", RUN).returncode == 0
    again = json.loads(tasker(shop, "status", str(task_id), "--json").stdout)
    assert again["status"] == "error"
    assert again["steps"]["charge"]["attempts"] == 1  # a fresh budget: counted anew


def test_cancel_and_the_errors_scripts_can_rely_on(shop: dict[str, str]) -> None:
    """Cancel ends a task (a second cancel changes nothing and succeeds); bad --results,
    an unknown task and a retry of a cancelled task each exit 2 with the problem named on
    stderr, and change nothing."""
    task_id = failed_order(shop)
    bad = tasker(shop, "resolve", str(task_id), "charge", "--results", "{not json")
    assert bad.returncode == 2 and "--results is not valid JSON" in bad.stderr
    unknown = tasker(shop, "cancel", "999999")
    assert unknown.returncode == 2 and "999999" in unknown.stderr
    assert json.loads(tasker(shop, "status", str(task_id), "--json").stdout)["status"] == "error"
    out = tasker(shop, "cancel", str(task_id), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "cancelled"
    assert tasker(shop, "cancel", str(task_id)).returncode == 0
    refused = tasker(shop, "retry", str(task_id))
    assert refused.returncode == 2 and "error:" in refused.stderr
    assert json.loads(tasker(shop, "status", str(task_id), "--json").stdout)["status"] == (
        "cancelled"
    )


def test_resume_lets_a_paused_task_go_on_and_refuses_one_that_is_not(
    shop: dict[str, str],
) -> None:
    """Given an order whose charge paused the task, `tasker status` (and `status --wait`)
    exits 5, so a script tells it from done; `tasker resume --json` makes it live and it
    completes on the next run (status exits 0); resuming it again (now complete) exits 2
    naming the problem and leaves it complete; an unknown task exits 2 too."""
    assert tasker(shop, "migrate").returncode == 0
    out = tasker(shop, "enqueue", "order", "--context", '{"pause": true}', "--json")
    task_id = int(json.loads(out.stdout)["task_id"])
    assert run(shop, "-c", RUN).returncode == 0
    status = tasker(shop, "status", str(task_id), "--json")
    assert status.returncode == 5, status
    assert json.loads(status.stdout)["status"] == "paused"
    waited = tasker(shop, "status", str(task_id), "--wait", "--timeout", "10")
    assert waited.returncode == 5 and "paused" in waited.stdout, waited

    out = tasker(shop, "resume", str(task_id), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] not in ("paused", "complete")
    assert run({**shop, "CARD_CHECKED": "1"}, "-c", RUN).returncode == 0
    finished = tasker(shop, "status", str(task_id), "--json")
    assert finished.returncode == 0, finished
    done = json.loads(finished.stdout)
    assert done["status"] == "complete"
    assert done["steps"]["ship"]["results"] == {"shipped": {"charged": True}}

    again = tasker(shop, "resume", str(task_id))
    assert again.returncode == 2 and "error:" in again.stderr and "paused" in again.stderr
    assert json.loads(tasker(shop, "status", str(task_id), "--json").stdout)["status"] == (
        "complete"
    )
    unknown = tasker(shop, "resume", "999999")
    assert unknown.returncode == 2 and "999999" in unknown.stderr


def test_signal_an_event_from_the_command_line(shop: dict[str, str]) -> None:
    """Given a task waiting for "approved", when `tasker signal ID approved --payload JSON`
    runs, then it prints the task and exits 0, and the step takes the payload as results
    once the work runs; a name no step waits for, bad JSON and a finished task exit 2 with
    the reason on stderr."""
    assert tasker(shop, "migrate").returncode == 0
    out = tasker(shop, "enqueue", "approval", "--json")
    task_id = int(json.loads(out.stdout)["task_id"])
    assert run(shop, "-c", RUN).returncode == 0
    wrong = tasker(shop, "signal", str(task_id), "rejected", "--payload", "{}")
    assert wrong.returncode == 2 and "approved" in wrong.stderr
    bad = tasker(shop, "signal", str(task_id), "approved", "--payload", "{nope")
    assert bad.returncode == 2 and "--payload" in bad.stderr
    ok = tasker(shop, "signal", str(task_id), "approved", "--payload", '{"by": "ann"}', "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["task_id"] == task_id
    assert run(shop, "-c", RUN).returncode == 0
    status = tasker(shop, "status", str(task_id), "--json")
    shown = json.loads(status.stdout)
    assert shown["status"] == "complete"
    assert shown["steps"]["approve"]["results"] == {"by": "ann"}
    late = tasker(shop, "signal", str(task_id), "approved")
    assert late.returncode == 2 and "complete" in late.stderr
