"""Property-based runs of the engine with waits, reattempts, skips and pauses.

Hypothesis draws a DAG whose steps wait before they start, reattempt a few times, and may
skip themselves or pause the task once; the test drives the task with `run_until_idle`, a
fake clock moved to each due time, and `resume` whenever it pauses; then checks that it
completed, that no step ran before its due time, and that reattempts never used attempts.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from integration_support import task_class

from tasker import StepTemplate, Tasker, TaskRequest
from tasker.core.states import Status, can_step, can_task
from tasker.testing.clock import FakeClock


@dataclass(frozen=True)
class Plan:
    name: str
    deps: tuple[str, ...]
    wait: int  # seconds after its dependencies (0: none)
    reattempts: int  # how many times it asks to run again later
    every: int  # ... after this many seconds
    ending: str  # "return", "skip" or "pause" (pauses once, on its first run)


@hs.composite
def journeys(draw: hs.DrawFn, max_steps: int = 6) -> list[Plan]:
    n = draw(hs.integers(min_value=2, max_value=max_steps))
    plans = []
    for i in range(n):
        parents = draw(hs.sets(hs.integers(0, i - 1), max_size=2)) if i else set()
        plans.append(
            Plan(
                name=f"s{i}",
                deps=tuple(f"s{j}" for j in sorted(parents)),
                wait=draw(hs.sampled_from([0, 0, 60, 3600, 86400])),
                reattempts=draw(hs.integers(0, 2)),
                every=draw(hs.sampled_from([1, 300, 7200])),
                ending=draw(hs.sampled_from(["return", "return", "skip", "pause"])),
            )
        )
    return plans


class Recorder:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: dict[str, list[datetime]] = {}
        self.lock = threading.Lock()

    def handler(self, plan: Plan):  # type: ignore[no-untyped-def]
        def handle(task, sequence, step):  # type: ignore[no-untyped-def]
            with self.lock:
                calls = self.calls.setdefault(plan.name, [])
                calls.append(self.clock())
                n = len(calls)
            if plan.ending == "pause" and n == 1:
                task.pause(reason=f"{plan.name} pauses")
            done_before = n - (2 if plan.ending == "pause" else 1)
            if done_before < plan.reattempts:
                step.reattempt(plan.every)
            if plan.ending == "skip":
                step.skip(reason=f"{plan.name} skips")
            return {"runs": n}

        return handle


_names = itertools.count()


def drive(app: Tasker, clock: FakeClock, task_id: int, rounds: int = 200) -> str:
    for _ in range(rounds):
        app.run_until_idle()
        view = app.get_task(task_id)
        if view.status == "paused":
            app.resume(task_id)
            continue
        if view.status != "in_progress" and view.status != "pending":
            return view.status
        assert view.next_run_at is not None, view
        clock.advance(max((view.next_run_at - clock()).total_seconds(), 0) + 1)
    raise AssertionError("the task did not finish")


def run_and_check(app: Tasker, clock: FakeClock, plans: list[Plan]) -> None:
    rec = Recorder(clock)
    name = f"journey_{next(_names)}"
    steps = [
        StepTemplate(
            name=p.name,
            handler=rec.handler(p),
            depends_on=list(p.deps),
            wait=p.wait or None,
            retryable=False,  # one attempt: a reattempt counted as one would fail the step
        )
        for p in plans
    ]
    app.register(task_class(name, steps))
    task = app.enqueue(TaskRequest(name=name))
    assert drive(app, clock, task.task_id) == "complete"
    view = app.get_task(task.task_id)
    last = {n: calls[-1] for n, calls in rec.calls.items()}
    for p in plans:
        step, calls = view.steps[p.name], rec.calls[p.name]
        assert step.status == ("skipped" if p.ending == "skip" else "complete"), (p, step)
        assert step.reattempts == p.reattempts, (p, step)
        assert step.attempts == (0 if p.ending == "skip" else 1), (p, step)
        ready = max((last[d] for d in p.deps), default=task.created_at)
        assert calls[0] >= ready + timedelta(seconds=p.wait), ("ran before its wait", p)
        gaps = list(itertools.pairwise(calls))
        reattempt_gaps = gaps[1:] if p.ending == "pause" else gaps
        for before, after in reattempt_gaps:
            assert after >= before + timedelta(seconds=p.every), ("reattempt ran early", p)
    for h_name, chain in itertools.groupby(
        sorted(app.history(task.task_id), key=lambda h: (h.step or "", 0)), key=lambda h: h.step
    ):
        allowed = can_task if h_name is None else can_step
        for t in chain:
            frm = None if t.from_status is None else Status(t.from_status)
            assert allowed(frm, Status(t.to_status)), t


PROPERTY_SETTINGS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


@pytest.fixture
def sqlite_app(sqlite_url, clock, clean_env):  # type: ignore[no-untyped-def]
    app = Tasker(database_url=sqlite_url, clock=clock)
    app.migrate()
    yield app
    app.close()


@pytest.fixture
def pg_app(pg_url, clock, clean_env):  # type: ignore[no-untyped-def]
    app = Tasker(database_url=pg_url, clock=clock)
    app.migrate()
    yield app
    app.close()


@settings(max_examples=25, **PROPERTY_SETTINGS)
@given(plans=journeys())
def test_random_journeys_end_complete_and_run_nothing_early_on_sqlite(sqlite_app, clock, plans):
    """Given a random DAG of waiting, reattempting, skipping and pausing steps, when driven
    (resumed at every pause), then it completes; no step started before its wait or its
    reattempt was due; reattempts were counted apart and never used the one attempt."""
    run_and_check(sqlite_app, clock, plans)


@pytest.mark.postgres
@settings(max_examples=8, **PROPERTY_SETTINGS)
@given(plans=journeys(max_steps=4))
def test_random_journeys_on_postgresql(pg_app, clock, plans):
    """The same property, a smaller run, on PostgreSQL."""
    run_and_check(pg_app, clock, plans)
