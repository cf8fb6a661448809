"""`tasker worker --metrics-port`: the workers' Prometheus series, scraped on a real port.

With `--processes 2` the children count in prometheus_client's multiprocess mode (a
folder the supervisor makes) and the supervisor serves the sum: the values scraped
must be what both processes did together, as the database records it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_supervisor import stop, supervisor
from test_worker import all_complete, deployment, diamonds, step_rows, wait_until

from tasker.web.worker_metrics import SERIES

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample served on the port: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.parametrize("processes", [2, 1])
def test_the_metrics_port_serves_what_every_worker_process_did(
    tmp_path: Path, processes: int
) -> None:
    """Given `tasker worker --processes N --metrics-port P` and 12 diamonds whose step B
    fails its first attempt, when they all complete, then the series scraped on P count
    every attempt (B twice per task) and B's failures, the durations and queue delays of
    every attempt and pass, and with two processes the steps ran in both, summed (and the
    folder the children counted in is removed when the supervisor stops)."""
    port = free_port()
    n = 12
    with deployment(tmp_path) as d:
        proc, log = supervisor(
            tmp_path,
            f"{d.workers.module}:make_app",
            d.workers.env,
            "--processes",
            str(processes),
            "--metrics-port",
            str(port),
        )
        try:
            wait_until(
                lambda: log.read_text(errors="replace").count(" thread(s) on ") >= processes,
                30,
                "the workers to start",
                alive=[proc],
            )
            ids = diamonds(d.app, n, default_sleep=0.05, fail_once=["B"], retry_after=0.2)
            wait_until(all_complete(d.sql, ids), 60, "the diamonds to complete", alive=[proc])
            rows = step_rows(d.sql, ids)
            samples = scrape(port)
        finally:
            assert stop(proc, log, 30) == 0, log.read_text()[-3000:]
        if processes > 1:  # the supervisor's folder of multiprocess mode is gone with it
            found = re.search(r"\(counted in (\S+)\)", log.read_text(errors="replace"))
            assert found, log.read_text()[-3000:]
            assert not Path(found.group(1)).exists()

    pids = {r[4]["pid"] for r in rows}
    assert len(pids) == processes, f"steps ran in {pids}"
    attempts = {step: 0 for step in "ABCD"}
    for _, step, _, tried, _ in rows:
        attempts[step] += tried
    assert attempts == {"A": n, "B": 2 * n, "C": n, "D": n}
    for step, count in attempts.items():
        labels = {"task": "diamond", "step": step}
        assert _value(samples, "tasker_attempts_total", **labels) == count, step
        assert _value(samples, "tasker_attempt_duration_seconds_count", **labels) == count
        inf = _value(samples, "tasker_attempt_duration_seconds_bucket", le="+Inf", **labels)
        assert inf == count
    assert _value(samples, "tasker_attempt_failures_total", task="diamond", step="B") == n
    assert _value(samples, "tasker_attempt_failures_total", task="diamond", step="A") == 0
    passes = _value(samples, "tasker_passes_total", task="diamond")
    assert passes >= 2 * n  # one before B's failure, one after its backoff, per task
    assert _value(samples, "tasker_queue_delay_seconds_count", task="diamond") == passes
    # The workers' own messages: each retry's delayed message at least.
    assert _value(samples, "tasker_messages_sent_total") >= n
    assert _value(samples, "tasker_lease_losses_total") == 0
    served = {name for name, _ in samples}
    for name, (kind, _, _) in SERIES.items():
        if kind == "counter" and name not in ("tasker_limit_waits_total",):
            assert name in served, f"{name} is not served"


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_metrics_port_in_use_is_refused_naming_it(tmp_path: Path, processes: str) -> None:
    """Given a port something already listens on, when a worker is asked to serve its
    metrics there, then it exits 2 at once, naming the port, and runs nothing."""
    (tmp_path / "tinyapp.py").write_text(
        "from tasker import Tasker\napp = Tasker(database_url='sqlite:///tiny.db')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "tasker", "-v", "worker", "tinyapp:app",
             "--processes", processes, "--metrics-port", str(port), "--graceful-timeout", "1"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr
    assert " thread(s) on " not in done.stderr  # no worker started
