"""`/health` (database and broker checks) and `/metrics` (Prometheus text format).

The metrics of tasks and steps are read from the database at each scrape, so the
serving process reports what every worker did, whichever machine it ran on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy.engine import Connection

from tasker.app import Tasker
from tasker.core.states import TASK_LIVE, Status
from tasker.store import schema as m
from tasker.web.schemas import Health

log = logging.getLogger("tasker.web")

router = APIRouter()

#: Every series /metrics serves: name -> (labels, help). The README lists them.
SERIES: dict[str, tuple[tuple[str, ...], str]] = {
    "tasker_tasks": (("name", "status"), "Tasks stored, by task name and status."),
    "tasker_steps": (("task", "step", "status"), "Steps stored, by task, step name and status."),
    "tasker_step_attempts": (
        ("task", "step"),
        "Attempts made so far by the stored steps, by task and step name.",
    ),
    "tasker_tasks_overdue": (
        (),
        "Live tasks due to run (next_run_at in the past) but not claimed by a worker.",
    ),
    "tasker_oldest_overdue_seconds": (
        (),
        "How long the longest-waiting due, unclaimed live task has waited (0 if none).",
    ),
    "tasker_metrics_scrape_ok": ((), "1 if the last scrape read the database, 0 if it failed."),
}


def _gauge(name: str) -> GaugeMetricFamily:
    labels, doc = SERIES[name]
    return GaugeMetricFamily(name, doc, labels=list(labels))


class DatabaseCollector(Collector):
    """Reads the task and step counts from the database at each scrape."""

    def __init__(self, app: Tasker) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        """Yield the series of `SERIES`; a failed read yields `scrape_ok 0` only."""
        ok = _gauge("tasker_metrics_scrape_ok")
        try:
            families = self._read()
        except Exception:
            log.warning("reading the metrics from the database failed", exc_info=True)
            ok.add_metric([], 0)
            yield ok
            return
        yield from families
        ok.add_metric([], 1)
        yield ok

    def _read(self) -> list[Metric]:
        T, S, NT, NS = m.tasks, m.workflow_steps, m.named_tasks, m.named_steps
        now = self.app.now()
        live = [s.value for s in TASK_LIVE]
        with self.app.db.read() as conn:
            tasks = task_counts(conn)
            steps = conn.execute(
                sa.select(
                    NT.c.name, NS.c.name, S.c.status, sa.func.count(), sa.func.sum(S.c.attempts)
                )
                .select_from(S)
                .join(T, S.c.task_id == T.c.task_id)
                .join(NT, T.c.named_task_id == NT.c.named_task_id)
                .join(NS, S.c.named_step_id == NS.c.named_step_id)
                .group_by(NT.c.name, NS.c.name, S.c.status)
            ).all()
            overdue = conn.execute(
                sa.select(sa.func.count(), sa.func.min(T.c.next_run_at)).where(
                    T.c.status.in_(live),
                    T.c.next_run_at <= now,
                    sa.or_(T.c.lease_expires_at.is_(None), T.c.lease_expires_at < now),
                )
            ).one()
        by_task, by_step, attempts = (
            _gauge("tasker_tasks"),
            _gauge("tasker_steps"),
            _gauge("tasker_step_attempts"),
        )
        # Every registered name in every status, 0 when none: an alert on a series
        # finds it even before the first task of that status exists.
        counts = {(n, st.value): 0 for n in self.app.factory.names() for st in Status}
        for name, status, count in tasks:
            counts[(name, status)] = count
        for (name, status), count in sorted(counts.items()):
            if status != Status.SKIPPED.value:
                by_task.add_metric([name, status], count)
        totals: dict[tuple[str, str], int] = {}
        for task, step, status, count, tried in steps:
            by_step.add_metric([task, step, status], count)
            totals[(task, step)] = totals.get((task, step), 0) + int(tried or 0)
        for (task, step), tried in totals.items():
            attempts.add_metric([task, step], tried)
        count_due, oldest = overdue
        due, age = _gauge("tasker_tasks_overdue"), _gauge("tasker_oldest_overdue_seconds")
        due.add_metric([], count_due or 0)
        age.add_metric([], _age(now, oldest))
        return [by_task, by_step, attempts, due, age]


def task_counts(conn: Connection) -> list[tuple[str, str, int]]:
    """How many tasks of each name are in each status: (name, status, count) rows."""
    T, NT = m.tasks, m.named_tasks
    rows = conn.execute(
        sa.select(NT.c.name, T.c.status, sa.func.count())
        .join(NT, T.c.named_task_id == NT.c.named_task_id)
        .group_by(NT.c.name, T.c.status)
    ).all()
    return [(str(n), str(st), int(c)) for n, st, c in rows]


def _age(now: Any, oldest: Any) -> float:
    if oldest is None:
        return 0.0
    from tasker.core.clock import as_utc

    return max(0.0, float((now - as_utc(oldest)).total_seconds()))


def registry_for(app: Tasker) -> CollectorRegistry:
    """A registry of this app's database metrics (not the process-global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(app))
    return registry


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics (no token needed)",
)
def metrics(request: Request) -> Response:
    """The metrics in Prometheus text format."""
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _check(fn: Any) -> str:
    try:
        fn()
    except Exception as exc:
        return f"failed: {type(exc).__name__}: {exc}"[:300]
    return "ok"


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "a check failed"}},
    summary="Liveness with database and broker checks (no token needed)",
)
def health(request: Request) -> Any:
    """200 when the database and the broker answer, else 503 naming what failed."""
    app: Tasker = request.app.state.tasker

    def database() -> None:
        with app.db.read() as conn:
            conn.execute(sa.text("SELECT 1"))

    def broker() -> None:
        client = getattr(app.dispatch.broker, "client", None)
        if client is not None:  # Redis; the in-process broker has nothing to check
            client.ping()

    checks = {"database": _check(database), "broker": _check(broker)}
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "failing", "checks": checks}, status_code=200 if ok else 503
    )
