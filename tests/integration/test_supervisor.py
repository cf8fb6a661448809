"""`tasker worker --processes N` (N > 1): the supervisor, with real subprocesses.

A crashing child is restarted with a growing delay; a stop tells every child at once,
lets the attempts in flight finish (the graceful timeout, by default the app's longest
step timeout) and SIGKILLs whatever still runs after it, all together.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_worker import deployment, diamonds, held_leases, step_rows, wait_until

from tasker.transport import worker

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def supervisor(
    folder: Path, target: str, env: dict[str, str], *extra: str
) -> tuple[subprocess.Popen[bytes], Path]:
    log = folder / "supervisor.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tasker", "-v", "worker", target, "--threads", "2", *extra],
            env=env,
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, log


def stop(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"the supervisor ignored SIGTERM for {timeout} s\n{log.read_text()[-4000:]}")


def test_a_crashing_child_is_restarted_with_a_growing_delay(tmp_path: Path) -> None:
    """Given two children that die at start (their app cannot be imported), when the
    supervisor runs, then each restart waits longer than the one before (0.5 s, 1 s,
    2 s, ...) instead of every 0.5 s for ever; and SIGTERM still stops it at once."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc, log = supervisor(
        tmp_path, "tasker_no_such_module:app", env, "--processes", "2", "--graceful-timeout", "1"
    )
    try:

        def delays() -> list[float]:
            found = re.findall(r"restarting it in ([0-9.]+) s", log.read_text(errors="replace"))
            return [float(d) for d in found]

        wait_until(lambda: len(delays()) >= 6, 60, "six restarts")
        seen = delays()
        assert seen[:6] == [0.5, 0.5, 1.0, 1.0, 2.0, 2.0], log.read_text()[-3000:]
    finally:
        assert stop(proc, log, 20) == 0


def test_two_processes_stop_gracefully_together(tmp_path: Path) -> None:
    """Given a supervisor of two worker processes (default graceful timeout: the app's
    longest step timeout, here the 300 s default) with first steps running, when it gets
    SIGTERM, then the children finish the attempts in flight, start nothing new, hand
    the tasks back, and the supervisor exits 0."""
    with deployment(tmp_path) as d:
        proc, log = supervisor(
            tmp_path, f"{d.workers.module}:make_app", d.workers.env, "--processes", "2"
        )
        try:
            wait_until(
                lambda: log.read_text(errors="replace").count(" thread(s) on ") == 2,
                40,
                "both children to start",
            )
            assert log.read_text().count("a graceful stop waits up to 300 s") == 2
            ids = diamonds(d.app, 4, sleep={"A": 2.5}, default_sleep=0.01)

            def a_running() -> bool:
                return [r[2] for r in step_rows(d.sql, ids) if r[1] == "A"].count(
                    "in_progress"
                ) >= 2

            wait_until(a_running, 20, "step A of two tasks to be in progress")
            assert stop(proc, log, 40) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        rows = step_rows(d.sql, ids)
        done = [r for r in rows if (r[2], r[3]) == ("complete", 1)]
        assert len(done) >= 2 and {r[1] for r in done} == {"A"}, log.read_text()[-3000:]
        assert all((r[2], r[3]) == ("pending", 0) for r in rows if r not in done), rows
        assert held_leases(d.sql) == []


def test_children_still_running_after_the_deadline_are_killed_together(monkeypatch, caplog) -> None:
    """Given two children that ignore SIGTERM, when the supervisor stops them, then both
    get SIGTERM at once and, one deadline later for both, SIGKILL, in one go."""
    monkeypatch.setattr(worker, "KILL_MARGIN_SECONDS", 0.5)
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE) for _ in range(2)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
    with caplog.at_level(logging.WARNING, logger="tasker.worker"):
        worker.stop_all(procs, graceful_timeout=0.5)
    assert [p.returncode for p in procs] == [-signal.SIGKILL] * 2
    killed = [r.getMessage() for r in caplog.records if "killing" in r.getMessage()]
    assert killed == [
        f"killing 2 worker process(es) still running 1 s after the stop: "
        f"{procs[0].pid}, {procs[1].pid}"
    ]
    for p in procs:
        assert p.stdout is not None
        p.stdout.close()
