"""Server time of the dashboard's task page for a 200-step DAG (the issue's budget: 200 ms).

Renders `/tasks/{id}` through the ASGI app in this process (no network), after the task ran
to completion (so every step has results and history), and prints the median and worst
of the requests. Run: `python bench/task_page.py [--steps 200] [--requests 30]
[--database-url URL]` (default: a new SQLite file; a PostgreSQL URL must name an
empty database of its own: the bench leaves its task there).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import httpx

from tasker import StepTemplate, Tasker, TaskHandler, TaskRequest


def ok(task, sequence, step):
    return {"ok": True, "step": step.name}


def handler(steps: int) -> type[TaskHandler]:
    """A DAG of `steps` no-op steps in layers of ten, each fanning out from one parent."""
    templates = [StepTemplate(name="s000", handler=ok)] + [
        StepTemplate(name=f"s{i:03d}", handler=ok, depends_on=[f"s{(i - 1) // 10 * 10:03d}"])
        for i in range(1, steps)
    ]
    return type("Big", (TaskHandler,), {"name": "big", "step_templates": templates})


async def measure(app: Tasker, task_id: int, requests: int) -> list[float]:
    asgi = app.asgi(tokens={"bench": "read"})
    transport = httpx.ASGITransport(app=asgi)
    headers = {"Authorization": "Bearer bench"}
    async with httpx.AsyncClient(transport=transport, base_url="http://b", headers=headers) as c:
        times = []
        for _ in range(requests + 3):
            started = time.perf_counter()
            response = await c.get(f"/tasks/{task_id}")
            times.append(time.perf_counter() - started)
            response.raise_for_status()
    return times[3:]  # the first requests warm the template cache and the pool


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--requests", type=int, default=30)
    p.add_argument("--database-url")
    args = p.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/page.db"
    with Tasker(database_url=url) as app:
        app.register(handler(args.steps))
        app.migrate()
        task_id = app.enqueue(TaskRequest(name="big")).task_id
        app.run_until_idle()
        times = asyncio.run(measure(app, task_id, args.requests))
    ms = sorted(t * 1000 for t in times)
    median, p90 = statistics.median(ms), ms[int(len(ms) * 0.9) - 1]
    print(
        f"task page, {args.steps} steps, {len(ms)} requests: median {median:.1f} ms, "
        f"p90 {p90:.1f} ms, worst {ms[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
