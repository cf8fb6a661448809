"""The `tasker` command line, run as a user would: in subprocesses."""

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
    from tasker import StepTemplate, TaskHandler, Tasker

    def greet(task, sequence, step):
        return {"greeting": "hello " + step.inputs["who"]}

    class Greet(TaskHandler):
        name = "greet"
        context_schema = {
            "type": "object",
            "required": ["who"],
            "properties": {"who": {"type": "string"}, "times": {"type": "integer"}},
        }
        step_templates = [StepTemplate(name="say", handler=greet)]

    app = Tasker(database_url=os.environ["TASKER_DATABASE_URL"])
    app.register(Greet)
    """
)


def tasker(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "tasker", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    (tmp_path / "greetapp.py").write_text(APP_MODULE)
    env = {
        "TASKER_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
        "PYTHONPATH": str(tmp_path),
    }
    return tmp_path, env


def test_demo_runs_every_order_to_completion_and_reports(tmp_path: Path) -> None:
    """Given a fresh folder, when `tasker demo` runs, then every order completes, the
    flaky tax call is retried, the fraud review is resolved by hand, and a report prints."""
    result = tasker("demo", "--dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "5 complete" in out
    assert out.count("status=complete") == 5
    assert "resolved_manually" in out
    assert "3/4" in out  # calculate_tax needed three attempts
    assert "annotation report: order_audit" in out
    assert "2 tax-service outage(s) retried" in out


def test_demo_runs_the_signup_journeys_through_weeks_on_a_fake_clock(tmp_path: Path) -> None:
    """Given a fresh folder, when `tasker demo` runs, then both signup journeys complete:
    the activation polled daily, the reminder two days later, the survey on day 15, and
    bob's task, paused by a declined card, goes on once a person resumes it."""
    result = tasker("demo", "--dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    journey = "welcome d0, check_activation d2, start_trial d2, remind d4, survey d15"
    assert f"(ann@example.com): complete: {journey}" in out
    assert "(bob@example.com): paused ('card declined')" in out
    assert f"(bob@example.com): complete: {journey}" in out
    assert (tmp_path / "tasker-journeys.db").exists()


def test_migrate_enqueue_and_status_round_trip(project: tuple[Path, dict[str, str]]) -> None:
    """Given an app module, when a task is enqueued from the CLI and run, then `status`
    shows it as a table and as JSON."""
    cwd, env = project
    assert tasker("migrate", "--app", "greetapp:app", cwd=cwd, env=env).returncode == 0
    enq = tasker(
        "enqueue",
        "greet",
        "--context",
        '{"who": "ada"}',
        "--json",
        "--app",
        "greetapp:app",
        cwd=cwd,
        env=env,
    )
    assert enq.returncode == 0, enq.stderr
    task_id = json.loads(enq.stdout)["task_id"]

    run = subprocess.run(
        [sys.executable, "-c", "from greetapp import app; app.run_until_idle()"],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr

    table = tasker("status", str(task_id), cwd=cwd, env=env)
    assert table.returncode == 0, table.stderr
    assert "status=complete" in table.stdout and "hello ada" in table.stdout

    as_json = json.loads(tasker("status", str(task_id), "--json", cwd=cwd, env=env).stdout)
    assert as_json["status"] == "complete"
    assert as_json["steps"]["say"]["results"] == {"greeting": "hello ada"}

    listing = tasker("status", cwd=cwd, env=env)
    assert listing.returncode == 0 and "greet" in listing.stdout


def test_invalid_context_is_refused_naming_every_violation(
    project: tuple[Path, dict[str, str]],
) -> None:
    """Given a schema, when the CLI enqueues a context that breaks it twice, then it exits 2,
    names both violations, and stores nothing."""
    cwd, env = project
    listing = tasker("status", cwd=cwd, env=env)
    assert listing.returncode == 2 and "tasker migrate" in listing.stderr
    assert tasker("migrate", cwd=cwd, env=env).returncode == 0
    bad = tasker(
        "enqueue", "greet", "--context", '{"times": "x"}', "--app", "greetapp:app", cwd=cwd, env=env
    )
    assert bad.returncode == 2
    assert "'who' is a required property" in bad.stderr
    assert "'x' is not of type 'integer'" in bad.stderr
    listing = tasker("status", "--json", cwd=cwd, env=env)
    assert json.loads(listing.stdout) == []


def test_bad_input_gets_clear_errors(project: tuple[Path, dict[str, str]]) -> None:
    """Malformed JSON, an unknown task, an unknown task id and a missing app module each
    fail with exit code 2 and a message that names the problem."""
    cwd, env = project
    tasker("migrate", cwd=cwd, env=env)
    not_json = tasker(
        "enqueue", "greet", "--context", "{nope", "--app", "greetapp:app", cwd=cwd, env=env
    )
    assert not_json.returncode == 2 and "not valid JSON" in not_json.stderr
    unknown = tasker("enqueue", "nope", "--app", "greetapp:app", cwd=cwd, env=env)
    assert unknown.returncode == 2 and "no task handler named 'nope'" in unknown.stderr
    missing = tasker("status", "424242", cwd=cwd, env=env)
    assert missing.returncode == 2 and "no task has id 424242" in missing.stderr
    no_module = tasker("enqueue", "greet", "--app", "no_such_module:app", cwd=cwd, env=env)
    assert no_module.returncode == 2 and "cannot import 'no_such_module'" in no_module.stderr
