"""The chaos test's checks of its `chaos_sleeper` tasks (see `chaos_app.ChaosSleeper`).

Every sleeper task and step ends `complete` with its attempts within the retry limit,
and from the execution log:

- no step ran twice at once (each execution starts after the previous one ended, a killed
  one having ended by its kill time);
- no wait ran early: S's first execution started no sooner than W's recorded completion
  (`processed_at`) + `WAIT`, A's no sooner than the task's `created_at` + `AFTER`, and each
  run of R that follows a recorded reattempt no sooner than the requesting run's end +
  `REATTEMPT_WAIT`;
- reattempts are counted apart from attempts: R ends with exactly `REATTEMPTS`
  reattempts; a run after a recorded reattempt has the same attempt number as the run that
  asked (no attempt used) unless a claim was lost in between (then it starts only after
  that claim's lease expired), a run after a lost or failed one a higher one; its results
  come from a run that saw every reattempt.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import chaos_app

#: Float rounding of the stored times (microseconds in PostgreSQL) and the log's.
SLACK = 0.001


def check_sleepers(
    sql: Callable[..., list[Any]],
    executions: Sequence[Any],
    fed: list[int],
    lease_seconds: float,
) -> dict[str, Any]:
    """Assert the sleepers' end state and log; return their counts.

    Args:
        sql: runs a query on the chaos database, returns its rows.
        executions: every logged execution (`test_chaos.Execution`: `end` is set, from
            the log or the kill time), of any task.
        fed: the sleeper tasks' ids.
        lease_seconds: the workers' lease: how long a lost claim holds its step.
    """
    tasks = sql(
        "SELECT task_id, status, lease_owner, extract(epoch FROM created_at)::float"
        " FROM tasker_tasks WHERE task_id = ANY(%s)",
        (fed,),
    )
    assert sorted(t[0] for t in tasks) == sorted(fed)
    bad_tasks = [t for t in tasks if t[1] != "complete" or t[2] is not None]
    assert not bad_tasks, f"sleeper tasks not complete or still leased: {bad_tasks}"
    created = {t[0]: t[3] for t in tasks}
    steps = sql(
        """SELECT s.task_id, n.name, s.status, s.attempts, s.reattempts, s.retry_limit,
                  s.results, extract(epoch FROM s.processed_at)::float
             FROM tasker_workflow_steps s JOIN tasker_named_steps n USING (named_step_id)
            WHERE s.task_id = ANY(%s)""",
        (fed,),
    )
    assert len(steps) == len(chaos_app.ChaosSleeper.step_templates) * len(fed)
    bad = [s for s in steps if s[2] != "complete" or not 1 <= s[3] <= s[5]]
    assert not bad, f"sleeper steps not complete or over their attempts: {bad[:10]}"
    step = {(s[0], s[1]): s for s in steps}

    ours = set(fed)
    by_step: dict[tuple[int, str], list[Any]] = defaultdict(list)
    for e in executions:
        if e.task_id in ours:
            by_step[(e.task_id, e.step)].append(e)
    unexplained = [e for runs in by_step.values() for e in runs if e.end is None]
    assert not unexplained, f"sleeper runs with no end whose worker was not killed: {unexplained}"

    problems: list[str] = []
    early: list[float] = []  # how long after its due time each wait's first run began
    for key, runs in by_step.items():
        runs.sort(key=lambda e: e.started_at)
        for prev, nxt in itertools.pairwise(runs):
            if nxt.started_at < prev.end:
                problems.append(f"{key}: overlapping runs {prev} and {nxt}")
    for task_id in fed:
        w_done = step[(task_id, "W")][7]
        dues = {"S": w_done + chaos_app.WAIT, "A": created[task_id] + chaos_app.AFTER}
        for name, due in dues.items():
            waited = by_step.get((task_id, name))
            if not waited:
                problems.append(f"task {task_id}: no logged run of {name}")
                continue
            early.append(waited[0].started_at - due)
            if early[-1] < -SLACK:
                problems.append(f"task {task_id}: {name} started {-early[-1]:.3f} s early")
    reattempt_waits = _check_reattempts(step, by_step, fed, problems, lease_seconds)
    assert not problems, "\n".join(problems[:30])
    return {
        "sleeper_tasks": len(fed),
        "sleeper_runs": sum(len(r) for r in by_step.values()),
        "sleeper_runs_killed": sum(e.killed for r in by_step.values() for e in r),
        "wait_min_s_past_due": round(min(early), 3) if early else None,
        "reattempts_recorded": sum(step[(t, "R")][4] for t in fed),
        "reattempt_min_s_past_due": round(min(reattempt_waits), 3) if reattempt_waits else None,
        "reattempting_step_retries": sum(step[(t, "R")][3] - 1 for t in fed),
    }


def _check_reattempts(
    step: dict[tuple[int, str], Any],
    by_step: dict[tuple[int, str], list[Any]],
    fed: list[int],
    problems: list[str],
    lease_seconds: float,
) -> list[float]:
    """R's reattempts: counted apart from attempts, each honouring its wait."""
    margins = []
    for task_id in fed:
        _, _, _, attempts, reattempts, _, results, _ = step[(task_id, "R")]
        runs = by_step.get((task_id, "R"), [])
        if reattempts != chaos_app.REATTEMPTS:
            problems.append(f"task {task_id}: R reattempted {reattempts} times, not 3")
        seen = [e.reattempts for e in runs]
        if seen != sorted(seen) or (runs and seen[0] != 0):
            problems.append(f"task {task_id}: R's runs saw reattempts {seen}")
        for prev, nxt in itertools.pairwise(runs):
            if nxt.reattempts == prev.reattempts + 1:  # prev's request was recorded
                assert prev.ended_at is not None  # it logged its end, then asked
                # A claim lost in between (its worker killed, or PostgreSQL restarted,
                # before the run logged its start) used an attempt; the step could run
                # again only once that claim's lease, taken no sooner than the
                # reattempt's due time, had expired.
                lost_between = nxt.started_at >= (
                    prev.ended_at + chaos_app.REATTEMPT_WAIT + lease_seconds - SLACK
                )
                if nxt.attempt < prev.attempt or (nxt.attempt > prev.attempt and not lost_between):
                    problems.append(
                        f"task {task_id}: a reattempt used an attempt: {prev} then {nxt}"
                    )
                margins.append(nxt.started_at - (prev.ended_at + chaos_app.REATTEMPT_WAIT))
                if margins[-1] < -SLACK:
                    problems.append(f"task {task_id}: R ran again early: {prev} then {nxt}")
            elif nxt.reattempts == prev.reattempts and nxt.attempt <= prev.attempt:
                problems.append(f"task {task_id}: a lost or failed run used no attempt: {runs}")
            elif nxt.reattempts not in (prev.reattempts, prev.reattempts + 1):
                problems.append(f"task {task_id}: R's reattempts jumped: {prev} then {nxt}")
        final = {e.execution_id: e for e in runs}.get(results["execution_id"])
        if final is None or final.reattempts != chaos_app.REATTEMPTS or final.attempt != attempts:
            problems.append(
                f"task {task_id}: R's results {results} are not from its last run"
                f" (attempts {attempts}); runs {runs}"
            )
    return margins
