"""Shared by the tests that run real worker processes against Redis and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

WORKER_CMD = [sys.executable, "-m", "tasker", "-v", "worker"]  # -v: INFO logs


@contextmanager
def flushed_redis(db: int, needed_by: str) -> Iterator[redis.Redis]:
    """Redis db `db` on 127.0.0.1, flushed before and after; fails loudly if unreachable."""
    r = redis.Redis(host="127.0.0.1", port=6379, db=db, socket_connect_timeout=3)
    try:
        r.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis is not reachable on 127.0.0.1:6379 ({exc}); {needed_by} it: "
            "start it with scripts/services",
            pytrace=False,
        )
    r.flushdb()
    try:
        yield r
    finally:
        r.flushdb()
        r.close()


def start_worker(
    target: str, threads: int, folder: Path, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """`tasker -v worker TARGET --processes 1 --threads N` in `folder`, logging to `log`.

    It gets its own process group, so `kill_group` ends it with its children.
    """
    with log.open("wb") as out:
        return subprocess.Popen(
            [*WORKER_CMD, target, "--processes", "1", "--threads", str(threads)],
            env=env,
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker's process group if it still runs, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
