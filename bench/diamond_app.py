"""The benchmark's app: a diamond A -> (B, C) -> D of no-op steps.

Run it as a worker with `tasker worker bench.diamond_app:app` (configured by the
`TASKER_*` environment). `app` is built on first access, so importing the module
has no side effect. When `BENCH_STATS_DIR` is set, each process writes the number of
write transactions it committed (`app.db.commits`), and the task messages it sent and
those its sweeper re-sent (counted by a `tasker.Counts` observer) to `commits-<pid>.json`
on exit; when `BENCH_PROFILE_DIR` is set, every thread of the process runs under cProfile
(timed by the CPU time of each thread) and the merged stats go to `profile-<pid>.pstats`
on exit. `BENCH_NO_PRE_PING=1` turns off the connection pool's pre-ping (an experiment
for a proposed change to tasker).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import time
from typing import Any

from tasker import Counts, StepTemplate, Tasker, TaskHandler

TASK_NAME = "bench_diamond"


#: `BENCH_STEP_SECONDS`: how long each step sleeps (0: a no-op), for the backlog run.
STEP_SECONDS = float(os.environ.get("BENCH_STEP_SECONDS", "0") or 0)


def noop(task: Any, sequence: Any, step: Any) -> dict[str, Any]:
    if STEP_SECONDS:
        time.sleep(STEP_SECONDS)
    return {}


class BenchDiamond(TaskHandler):
    name = TASK_NAME
    step_templates = [  # noqa: RUF012
        StepTemplate(name="A", handler=noop),
        StepTemplate(name="B", handler=noop, depends_on=["A"]),
        StepTemplate(name="C", handler=noop, depends_on=["A"]),
        StepTemplate(name="D", handler=noop, depends_on=["B", "C"]),
    ]


def profile_all_threads(folder: str) -> None:
    """cProfile this thread and every thread started from now on; dump at exit."""
    import cProfile
    import pstats
    import threading

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start(*_: Any) -> None:  # the first profile event of a new thread
        prof = cProfile.Profile(time.thread_time)  # CPU time of the thread, not wall time
        with lock:
            profiles.append(prof)
        prof.enable()

    def dump() -> None:
        threading.setprofile(None)  # type: ignore[arg-type]
        stats: pstats.Stats | None = None
        with lock:
            for prof in profiles:
                prof.disable()
                with contextlib.suppress(TypeError):  # a profiler that saw nothing
                    stats = pstats.Stats(prof) if stats is None else stats.add(prof)
        if stats is not None:
            stats.dump_stats(os.path.join(folder, f"profile-{os.getpid()}.pstats"))

    threading.setprofile(start)
    start()
    atexit.register(dump)


def make_app(**settings: Any) -> Tasker:
    """A Tasker with the diamond registered (settings as for `Tasker(...)`)."""
    if os.environ.get("BENCH_PROFILE_DIR"):
        profile_all_threads(os.environ["BENCH_PROFILE_DIR"])
    app = Tasker(**settings)
    app.register(BenchDiamond)
    if os.environ.get("BENCH_NO_PRE_PING"):  # experiment: what the pre-ping round trip costs
        app.db.engine.pool._pre_ping = False
    stats_dir = os.environ.get("BENCH_STATS_DIR")
    if stats_dir:
        counts = app.observe(Counts())

        def _report() -> None:
            path = os.path.join(stats_dir, f"commits-{os.getpid()}.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(
                    {
                        "pid": os.getpid(),
                        "commits": app.db.commits,
                        "messages": counts.messages,
                        "resent": counts.resent,
                    },
                    f,
                )

        atexit.register(_report)
    return app


_built: list[Tasker] = []


def __getattr__(name: str) -> Any:
    if name == "app":
        if not _built:
            _built.append(make_app())
        return _built[0]
    raise AttributeError(name)
