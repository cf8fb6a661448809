"""Property-based runs of the engine: random DAGs with random failure plans.

Hypothesis draws a DAG (edges only from earlier to later steps, so it is acyclic) and,
for every step, how its attempts go; the test then drives the task to its end with
`run_until_idle` and a fake clock, and checks what happened against an oracle.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from integration_support import EventLog, check_history, settle, task_class

from tasker import Decision, StepTemplate, Tasker, TaskRequest, errors
from tasker.testing.clock import FakeClock


@dataclass(frozen=True)
class StepPlan:
    """One step of a drawn workflow and how its attempts go."""

    name: str
    deps: tuple[str, ...]
    retry_limit: int
    retryable: bool
    fails: int  # its first `fails` attempts raise
    permanent: bool  # ... a PermanentError rather than a RuntimeError

    @property
    def max_attempts(self) -> int:
        return self.retry_limit if self.retryable else 1

    @property
    def succeeds(self) -> bool:
        """Whether the step succeeds once it may run."""
        if self.fails == 0:
            return True
        return not self.permanent and self.fails < self.max_attempts

    @property
    def attempts(self) -> int:
        """The attempts it makes once it may run."""
        if self.succeeds:
            return self.fails + 1
        return 1 if self.permanent else self.max_attempts


@hs.composite
def workflows(draw: hs.DrawFn, max_steps: int = 12) -> list[StepPlan]:
    n = draw(hs.integers(min_value=3, max_value=max_steps))
    plans = []
    for i in range(n):
        parents = (
            draw(hs.sets(hs.integers(min_value=0, max_value=i - 1), max_size=3)) if i else set()
        )
        plans.append(
            StepPlan(
                name=f"s{i}",
                deps=tuple(f"s{p}" for p in sorted(parents)),
                retry_limit=draw(hs.integers(min_value=1, max_value=4)),
                retryable=draw(hs.sampled_from([True, True, True, False])),
                fails=draw(hs.integers(min_value=0, max_value=4)),
                permanent=draw(hs.sampled_from([False, False, False, True])),
            )
        )
    return plans


class Recorder:
    """Step handlers following the plans, logging starts and successes in order."""

    def __init__(self) -> None:
        self.log = EventLog()
        self.lock = threading.Lock()
        self.running: set[str] = set()
        self.overlaps: list[str] = []
        self.calls: dict[str, list[int]] = {}

    def handler(self, plan: StepPlan):
        def handle(task, sequence, step):
            with self.lock:
                if plan.name in self.running:
                    self.overlaps.append(plan.name)
                self.running.add(plan.name)
                self.calls.setdefault(plan.name, []).append(step.attempts)
            self.log.add("start", plan.name)
            try:
                if step.attempts <= plan.fails:
                    kind = errors.PermanentError if plan.permanent else RuntimeError
                    raise kind(f"{plan.name} attempt {step.attempts} fails")
                self.log.add("done", plan.name)
                return {"attempt": step.attempts}
            finally:
                with self.lock:
                    self.running.discard(plan.name)

        return handle


_names = itertools.count()


def run_and_check(app: Tasker, clock: FakeClock, plans: list[StepPlan]) -> None:
    rec = Recorder()
    name = f"prop_{next(_names)}"
    app.register(
        task_class(
            name,
            [
                StepTemplate(
                    name=p.name,
                    handler=rec.handler(p),
                    depends_on=list(p.deps),
                    retry_limit=p.retry_limit,
                    retryable=p.retryable,
                )
                for p in plans
            ],
        )
    )
    task = app.enqueue(TaskRequest(name=name))
    done = settle(app, clock, task.task_id)

    # The oracle: a step runs iff all its dependencies succeeded.
    runs: dict[str, bool] = {}
    for p in plans:  # plans are in a topological order
        runs[p.name] = all(runs[d] and by_name(plans, d).succeeds for d in p.deps)
    everything_succeeds = all(runs[p.name] and p.succeeds for p in plans)

    assert done.status == ("complete" if everything_succeeds else "error")
    assert rec.overlaps == [], "a step ran twice at the same time"
    rec.log.assert_dependency_order({p.name: p.deps for p in plans})
    for p in plans:
        step = done.steps[p.name]
        if not runs[p.name]:
            assert (step.status, step.attempts) == ("pending", 0), p
            assert p.name not in rec.calls, p
            continue
        assert step.status == ("complete" if p.succeeds else "error"), (p, step)
        assert step.attempts == p.attempts <= p.max_attempts, (p, step)
        assert rec.calls[p.name] == list(range(1, p.attempts + 1)), p
        if p.succeeds:
            assert step.results == {"attempt": p.attempts}
        else:
            assert step.next_attempt_at is None
            assert step.error["message"] == f"{p.name} attempt {p.attempts} fails"
    check_history(app, task.task_id)


def by_name(plans: list[StepPlan], name: str) -> StepPlan:
    return next(p for p in plans if p.name == name)


PROPERTY_SETTINGS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


@pytest.fixture
def sqlite_app(sqlite_url, clock, clean_env):
    app = Tasker(database_url=sqlite_url, clock=clock)
    app.migrate()
    yield app
    app.close()


@pytest.fixture
def pg_app(pg_url, clock, clean_env):
    app = Tasker(database_url=pg_url, clock=clock)
    app.migrate()
    yield app
    app.close()


@settings(max_examples=60, **PROPERTY_SETTINGS)
@given(plans=workflows())
def test_random_dags_with_random_failures_on_sqlite(sqlite_app, clock, plans):
    """Given a random DAG whose steps fail their first k attempts (some permanently),
    when it is driven to its end, then steps ran only after their dependencies succeeded,
    never twice at once, within their attempt limits; the task is complete iff every step
    succeeded; steps that could not run stay pending; and the history matches."""
    run_and_check(sqlite_app, clock, plans)


@pytest.mark.postgres
@settings(max_examples=15, **PROPERTY_SETTINGS)
@given(plans=workflows(max_steps=8))
def test_random_dags_with_random_failures_on_postgresql(pg_app, clock, plans):
    """The same property, a smaller run, on PostgreSQL."""
    run_and_check(pg_app, clock, plans)


@hs.composite
def decisions(draw: hs.DrawFn, max_steps: int = 9) -> tuple[list[StepPlan], dict, list[str]]:
    """A random DAG below a decision step "s0", its branches (among the steps that depend
    on it directly) and the labels it chooses; every step succeeds."""
    n = draw(hs.integers(min_value=2, max_value=max_steps))
    plans = [StepPlan("s0", (), 1, True, 0, False)]
    for i in range(1, n):
        parents = draw(hs.sets(hs.integers(min_value=0, max_value=i - 1), min_size=1, max_size=3))
        plans.append(StepPlan(f"s{i}", tuple(f"s{p}" for p in sorted(parents)), 1, True, 0, False))
    direct = [p.name for p in plans if "s0" in p.deps]
    labels = draw(hs.lists(hs.sampled_from(["a", "b", "c"]), min_size=1, unique=True))
    branches = {lb: draw(hs.lists(hs.sampled_from(direct), unique=True)) for lb in labels}
    chosen = draw(hs.lists(hs.sampled_from(labels), min_size=1, unique=True))
    return plans, branches, chosen


def run_decision_and_check(app: Tasker, clock: FakeClock, case: tuple) -> None:
    plans, branches, chosen = case
    rec = Recorder()
    name = f"prop_decision_{next(_names)}"
    first = plans[0]

    def decide(task, sequence, step):
        rec.handler(first)(task, sequence, step)
        return Decision(*chosen)

    templates = [StepTemplate(name="s0", handler=decide, branches=branches)]
    templates += [
        StepTemplate(name=p.name, handler=rec.handler(p), depends_on=list(p.deps))
        for p in plans[1:]
    ]
    app.register(task_class(name, templates))
    task = app.enqueue(TaskRequest(name=name))
    done = settle(app, clock, task.task_id)

    # The oracle: a step named only by branches not chosen is skipped, and so is a step
    # all of whose dependencies were skipped; everything else runs once.
    taken = {s for lb in chosen for s in branches[lb]}
    skipped: set[str] = set()
    for p in plans[1:]:
        on_untaken = any(p.name in ss for lb, ss in branches.items() if lb not in chosen)
        if (on_untaken and p.name not in taken) or all(d in skipped for d in p.deps):
            skipped.add(p.name)
    assert done.status == "complete"
    assert rec.overlaps == []
    for p in plans:
        step = done.steps[p.name]
        if p.name in skipped:
            assert (step.status, step.attempts, step.results) == ("skipped", 0, None), p
            assert p.name not in rec.calls
        else:
            assert step.status == "complete", (p, step)
            assert rec.calls[p.name] == [1], p
    rec.log.assert_dependency_order(
        {
            p.name: tuple(d for d in p.deps if d not in skipped)
            for p in plans
            if p.name not in skipped
        }
    )
    check_history(app, task.task_id)


@settings(max_examples=40, **PROPERTY_SETTINGS)
@given(case=decisions())
def test_random_dags_below_a_decision_on_sqlite(sqlite_app, clock, case):
    """Given a random DAG below a decision step with random branches and choice, when it is
    driven to its end, then exactly the steps on branches not taken (and those all of whose
    dependencies were skipped) are skipped without running, every other step (joins too)
    ran once after its dependencies, the task completes, and the history matches."""
    run_decision_and_check(sqlite_app, clock, case)


@pytest.mark.postgres
@settings(max_examples=10, **PROPERTY_SETTINGS)
@given(case=decisions(max_steps=6))
def test_random_dags_below_a_decision_on_postgresql(pg_app, clock, case):
    """The same property, a smaller run, on PostgreSQL."""
    run_decision_and_check(pg_app, clock, case)


@hs.composite
def item_plans(draw: hs.DrawFn, max_items: int = 12) -> tuple[int, int, list[tuple[int, bool]]]:
    """A for_each step: its retry limit, its concurrency, and per item (fails, permanent)."""
    retry_limit = draw(hs.integers(1, 3))
    concurrency = draw(hs.integers(1, 4))
    plans = draw(
        hs.lists(hs.tuples(hs.integers(0, 3), hs.booleans()), min_size=1, max_size=max_items)
    )
    return retry_limit, concurrency, plans


def run_items_and_check(app: Tasker, clock: FakeClock, case: tuple) -> None:
    retry_limit, concurrency, plans = case
    lock, calls, running, overlaps = threading.Lock(), {}, set(), []

    def each(task, sequence, step):  # type: ignore[no-untyped-def]
        i = step.item_index
        with lock:
            if i in running:
                overlaps.append(i)
            running.add(i)
            calls.setdefault(i, []).append(step.attempts)
        try:
            fails, permanent = plans[i]
            if step.attempts <= fails:
                raise (errors.PermanentError if permanent else RuntimeError)(f"item {i} fails")
            return {"item": step.item}
        finally:
            with lock:
                running.discard(i)

    name = f"prop_items_{next(_names)}"
    values = [f"v{i}" for i in range(len(plans))]
    app.register(
        task_class(
            name,
            [
                StepTemplate(
                    name="each",
                    handler=each,
                    retry_limit=retry_limit,
                    concurrency=concurrency,
                    for_each=lambda task, seq: values,
                )
            ],
        )
    )
    task = app.enqueue(TaskRequest(name=name))
    done = settle(app, clock, task.task_id)

    def attempts(fails: int, permanent: bool) -> int:
        if fails == 0:
            return 1
        return 1 if permanent else min(fails + 1, retry_limit)

    def succeeds(fails: int, permanent: bool) -> bool:
        return fails == 0 or (not permanent and fails < retry_limit)

    ok = [succeeds(*p) for p in plans]
    step = done.steps["each"]
    assert overlaps == [], "an item ran twice at the same time"
    assert {i: len(c) for i, c in calls.items()} == {i: attempts(*p) for i, p in enumerate(plans)}
    assert all(c == list(range(1, len(c) + 1)) for c in calls.values())
    assert step.items == {
        "total": len(plans), "complete": sum(ok), "error": len(plans) - sum(ok), "pending": 0,
    }  # fmt: skip
    if all(ok):
        assert (done.status, step.status) == ("complete", "complete")
        assert step.results == {"items": [{"item": v} for v in values]}
    else:
        assert (done.status, step.status, step.next_attempt_at) == ("error", "error", None)
        assert step.error["items"] == [i for i, good in enumerate(ok) if not good]
    check_history(app, task.task_id)


@settings(max_examples=30, **PROPERTY_SETTINGS)
@given(case=item_plans())
def test_for_each_items_with_random_failures_on_sqlite(sqlite_app, clock, case):
    """Given a for_each step whose items fail their first k attempts (some permanently),
    when it is driven to its end, then each item made exactly the attempts its plan and
    the step's retry limit allow, never ran twice at once, the counts match, and the step
    completes with every result in order iff every item succeeded."""
    run_items_and_check(sqlite_app, clock, case)


@pytest.mark.postgres
@settings(max_examples=8, **PROPERTY_SETTINGS)
@given(case=item_plans(max_items=8))
def test_for_each_items_with_random_failures_on_postgresql(pg_app, clock, case):
    """The same property, a smaller run, on PostgreSQL."""
    run_items_and_check(pg_app, clock, case)
