"""The engine pass: what one task message does.

Claim the task's lease, then loop: start the ready steps (each in its own
thread, at most `max_concurrent_steps` at once), wait for outcomes, and record
them in one short lease-fenced transaction that also starts the steps they
made ready. A task whose steps all succeed finishes in one delivery; when only
backoffs remain the pass stores the next run time, releases the lease and has
the message sent again with that delay.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError

from tasker import lease as leases
from tasker import models as m
from tasker.audit import StepChange, write_step_changes
from tasker.backoff import backoff_seconds
from tasker.catalog import Catalog
from tasker.clock import as_utc
from tasker.db import Database
from tasker.errors import LeaseLostError, UnknownTaskError
from tasker.outcome import Outcome, describe, run_handler
from tasker.planner import StepState, Verdict, plan
from tasker.registry import HandlerFactory, RegisteredTask
from tasker.runtime import HandlerStep, HandlerTask, StepSequence
from tasker.settings import Settings
from tasker.states import Status
from tasker.views import StepView

log = logging.getLogger("tasker.engine")
_T = TypeVar("_T")


class _Stamp(threading.local):
    value: tuple[int, int, int] | None = None  # (task_id, tx_seq, revision)


def _transient(exc: DBAPIError) -> bool:
    """A lost connection or a database that is restarting: worth another try."""
    return bool(exc.connection_invalidated) or isinstance(exc, OperationalError)


#: Called after a commit that scheduled the task: (task_id, deliver_at).
Notify = Callable[[int, datetime], None]


@dataclass
class _Running:
    token: object
    deadline: float  # time.monotonic()
    # Timed out and recorded as failed, but its thread still runs (Python cannot kill
    # it): the step is not started again, here or elsewhere, until the thread ends.
    abandoned: bool = False


@dataclass
class _Pass:
    """Everything one engine pass knows about its task."""

    lease: leases.Lease
    reg: RegisteredTask
    row: dict[str, Any]
    revision: int
    views: dict[str, StepView]
    running: dict[str, _Running] = field(default_factory=dict)
    outcomes: queue.SimpleQueue[Outcome] = field(default_factory=queue.SimpleQueue)
    notify_at: datetime | None = None  # a message to send once the transaction commits
    annotations: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    changes: list[StepChange] = field(default_factory=list)  # transitions of this transaction

    def states(self) -> dict[str, StepState]:
        return {
            name: StepState(
                name=name,
                status=Status(v.status),
                attempts=v.attempts,
                max_attempts=v.retry_limit if v.retryable else 1,
                next_attempt_at=v.next_attempt_at,
                depends_on=v.depends_on,
            )
            for name, v in self.views.items()
        }

    def sequence(self) -> StepSequence:
        return StepSequence(self.views.get, tuple(self.views))

    def snapshot(self) -> _Snapshot:
        return dict(self.views), dict(self.running), self.revision, list(self.annotations)

    def restore(self, saved: _Snapshot) -> None:
        views, running, self.revision, annotations = saved
        self.views, self.running, self.annotations = dict(views), dict(running), list(annotations)
        self.changes = []


_Snapshot = tuple[dict[str, StepView], dict[str, "_Running"], int, list[tuple[int, dict[str, Any]]]]


def step_views(reg: RegisteredTask, rows: Sequence[Any]) -> dict[str, StepView]:
    """Build step views from step rows, with dependencies from the registered DAG."""
    views = {}
    for r in rows:
        tpl = reg.steps.get(r.name)
        views[r.name] = leases.step_view(r, tpl.depends_on if tpl else ())
    return views


class Engine:
    """Runs engine passes for one app; thread-safe (one pass per task message)."""

    def __init__(
        self,
        db: Database,
        factory: HandlerFactory,
        catalog: Catalog,
        settings: Settings,
        clock: Callable[[], datetime],
        owner: Callable[[], str],
        notify: Notify,
    ) -> None:
        self._db = db
        self._factory = factory
        self._catalog = catalog
        self._settings = settings
        self._clock = clock
        self._owner = owner
        self._notify = notify
        self._stopping = threading.Event()
        self._stamp = _Stamp()  # per thread: the task transaction being written

    def stop(self) -> None:
        """Ask running passes to start no new steps and hand their tasks back."""
        self._stopping.set()

    def resume(self) -> None:
        """Undo `stop` (the app's worker was started again)."""
        self._stopping.clear()

    def run_task(self, task_id: int) -> bool:
        """Run one engine pass for a task; a no-op if it is not claimable.

        Handler failures never escape: they are recorded as step errors. A lost
        lease ends the pass quietly (the new owner carries on).

        Returns:
            False if the pass failed (the database stayed unreachable, or a bug);
            the task is then left to the sweeper once its lease expires.
        """
        if self._stopping.is_set():
            self._notify(task_id, self._now())  # leave it to a worker that is not stopping
            return True
        p: _Pass | None = None
        try:
            p = self._claim(task_id)
            if p is not None:
                self._loop(p)
        except LeaseLostError as exc:
            log.info("task %s: %s; stopping this pass", task_id, exc)
        except Exception:
            log.exception("task %s: engine pass failed; the sweeper will pick it up", task_id)
            return False
        finally:
            if p is not None and p.running:
                self._wait_out(p)
        return True

    def _wait_out(self, p: _Pass) -> None:
        """Wait for this pass's step threads before returning.

        A new owner must not start a step while the old attempt is alive; each
        attempt ends by its time limit at the latest.
        """
        while p.running:
            batch, _ = self._wait(p)
            for o in batch:
                p.running.pop(o.name, None)

    def _write(self, p: _Pass | None, body: Callable[[Connection], _T]) -> _T:
        """Run `body` in a short write transaction, retrying while the database is away.

        Retries last at most one lease period: after that the lease may be someone
        else's, and the fence inside `body` would refuse the write anyway. A failure
        of the COMMIT itself is not retried: the transaction may have landed, and
        `body` is not idempotent. The pass then ends; its lease expires and the
        sweeper hands the task on, with whatever it started counted as lost attempts.
        """
        give_up = time.monotonic() + self._settings.lease_seconds
        delay = 0.05
        while True:
            self._stamp.value = None
            body_done = False
            try:
                with self._db.write() as conn:
                    result = body(conn)
                    body_done = True
                return result
            except DBAPIError as exc:
                if time.monotonic() + delay > give_up or not _transient(exc):
                    raise
                if body_done and self._landed(give_up):
                    return result
                log.warning(
                    "task %s: database error, retrying in %.2f s: %s",
                    p.lease.task_id if p else "?",
                    delay,
                    exc.orig,
                )
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _landed(self, give_up: float) -> bool:
        """After a COMMIT that failed, tell whether it landed anyway.

        Every engine transaction bumps the task's `tx_seq` (the claim and the fence do);
        steering calls bump it too, and also the revision.

        Raises:
            LeaseLostError: it cannot be told (a steering call interleaved): the pass
                ends and the sweeper hands the task on once the lease expires.
        """
        stamp = self._stamp.value
        if stamp is None:
            return False
        task_id, seq, revision = stamp
        while True:
            try:
                with self._db.read() as conn:
                    row = conn.execute(
                        sa.select(m.tasks.c.tx_seq, m.tasks.c.revision).where(
                            m.tasks.c.task_id == task_id
                        )
                    ).one()
                break
            except DBAPIError as exc:
                if time.monotonic() > give_up or not _transient(exc):
                    raise
                time.sleep(0.2)
        if row.revision == revision and row.tx_seq in (seq, seq - 1):
            log.warning(
                "task %s: a COMMIT reported an error but %s",
                task_id,
                "had landed" if row.tx_seq == seq else "had not landed; retrying",
            )
            return bool(row.tx_seq == seq)
        raise LeaseLostError(f"task {task_id}: cannot tell whether a failed COMMIT landed")

    # -- claiming -----------------------------------------------------------------

    def _claim(self, task_id: int) -> _Pass | None:
        now = self._now()
        s = self._settings

        def body(conn: Connection) -> tuple[_Pass, list[StepView]] | None:
            got = leases.claim(conn, task_id, self._owner(), now, s.lease_seconds)
            if got is None:
                return None
            lease, row = got
            row["name"], row["version"] = self._catalog.task_name(row["named_task_id"], conn)
            try:
                reg = self._factory.get(row["name"], row["version"])
            except UnknownTaskError as exc:
                # Another worker may know this handler: hand the task back for later.
                log.error("task %s: %s; releasing it", task_id, exc)
                later = now + timedelta(seconds=s.lease_seconds)
                leases.finish(conn, lease, None, later, now, "handler not registered here")
                return None
            rows = conn.execute(leases.select_steps([task_id])).all()
            p = _Pass(lease, reg, row, int(row["revision"]), step_views(reg, rows))
            self._stamp.value = (task_id, int(row["tx_seq"]), p.revision)
            self._recover_lost_steps(conn, p, now)
            started = self._advance(conn, p, now)
            self._flush_changes(conn, p, now)
            return p, started

        claimed = self._write(None, body)
        if claimed is None:
            return None
        p, started = claimed
        self._launch(p, started)
        return p

    def _recover_lost_steps(self, conn: Connection, p: _Pass, now: datetime) -> None:
        """Steps left `in_progress` by a previous lease holder count as failed attempts."""
        lost = [v for v in p.views.values() if v.status == Status.IN_PROGRESS.value]
        if not lost:
            return
        error = {
            "message": "worker lost: the step was in progress when its worker's lease expired",
            "error_class": "tasker.errors.WorkerLostError",
            "backtrace": "",
        }
        outcomes = [Outcome(v.name, None, ok=False, error=error) for v in lost]
        self._write_outcomes(conn, p, outcomes, now)

    # -- the loop -----------------------------------------------------------------

    def _loop(self, p: _Pass) -> None:
        while p.running:
            batch, freed = self._wait(p)
            now = self._now()
            waiting_on_abandoned = any(r.abandoned for r in p.running.values())
            if not batch and not freed and not waiting_on_abandoned:
                self._write(p, partial(self._refresh, p=p, now=now))  # renew the lease
                continue
            if batch:
                self._annotate(p, batch, now)
            before = p.snapshot()
            try:
                started = self._write(
                    p, partial(self._record, p=p, batch=batch, now=now, before=before)
                )
            except BaseException:
                # These attempts have returned: nothing is left to wait for on their account.
                for o in batch:
                    if not o.timed_out:
                        p.running.pop(o.name, None)
                raise
            self._launch(p, started)

    def _record(
        self, conn: Connection, p: _Pass, batch: list[Outcome], now: datetime, before: _Snapshot
    ) -> list[StepView]:
        """Record a batch of outcomes and start what they made ready: one transaction."""
        p.restore(before)  # a retried transaction starts from the state before the first try
        self._refresh(conn, p, now)
        self._write_outcomes(conn, p, batch, now)
        started = self._advance(conn, p, now)
        self._flush_changes(conn, p, now)
        return started

    def _flush_changes(self, conn: Connection, p: _Pass, now: datetime) -> None:
        """Write the transaction's step transitions in one statement."""
        write_step_changes(conn, p.lease.task_id, p.changes, now)
        p.changes = []

    def _wait(self, p: _Pass) -> tuple[list[Outcome], bool]:
        """Wait for outcomes, time-outs or the next lease renewal.

        Returns:
            The outcomes to record, and whether an abandoned attempt's thread ended
            (so its step may be planned again).
        """
        renew_every = self._settings.lease_seconds / 3
        deadlines = [r.deadline for r in p.running.values() if not r.abandoned]
        nearest = min(deadlines, default=time.monotonic() + renew_every)
        timeout = max(0.0, min(nearest - time.monotonic(), renew_every))
        arrived: list[Outcome] = []
        try:
            arrived.append(p.outcomes.get(timeout=timeout))
            while True:
                arrived.append(p.outcomes.get_nowait())
        except queue.Empty:
            pass
        batch, freed = [], False
        for o in arrived:
            r = p.running.get(o.name)
            if r is None or r.token is not o.token:
                continue
            if r.abandoned:  # its result came too late to count; the step is free again
                del p.running[o.name]
                freed = True
            else:
                batch.append(o)
        clock = time.monotonic()
        named = {o.name for o in batch}
        for name, r in p.running.items():
            if not r.abandoned and r.deadline <= clock and name not in named:
                limit = p.reg.steps[name].timeout or self._settings.step_timeout
                batch.append(Outcome.after_time_limit(name, r.token, limit))
        return batch, freed

    def _refresh(self, conn: Connection, p: _Pass, now: datetime) -> None:
        """Fence the lease; re-read the steps if a steering call changed them."""
        revision, seq = leases.fence(conn, p.lease, now, self._settings.lease_seconds)
        self._stamp.value = (p.lease.task_id, seq, revision)
        if revision != p.revision:
            rows = conn.execute(leases.select_steps([p.lease.task_id])).all()
            fresh = step_views(p.reg, rows)
            # Our own running steps stay as we know them.
            p.views = {n: (p.views[n] if n in p.running else v) for n, v in fresh.items()}
            p.revision = revision

    def _annotate(self, p: _Pass, batch: list[Outcome], now: datetime) -> None:
        """Call `update_annotations` with the steps just processed, outside any transaction."""
        wanted = [a for o in batch for a in o.annotations]
        htask = HandlerTask(p.row)
        steps = []
        for o in batch:
            hstep = HandlerStep(p.views[o.name])
            hstep.status = Status.COMPLETE.value if o.ok else Status.ERROR.value
            hstep.results, hstep.error = (o.results, None) if o.ok else (None, o.error)
            steps.append(hstep)
        try:
            p.reg.handler.update_annotations(htask, p.sequence(), steps)
            wanted += htask.take_annotations()
        except Exception as exc:
            log.exception("task %s: update_annotations failed", p.lease.task_id)
            wanted.append(("tasker.update_annotations_error", describe(exc)))
        p.annotations = [(self._catalog.annotation_type_id(t, now), a) for t, a in wanted]

    def _write_outcomes(
        self, conn: Connection, p: _Pass, outcomes: list[Outcome], now: datetime
    ) -> None:
        s = self._settings
        rows, changes = [], []
        for o in outcomes:
            v = p.views[o.name]
            if o.timed_out:
                p.running[o.name].abandoned = True
            else:
                p.running.pop(o.name, None)
            if o.ok:
                new = replace(
                    v,
                    status=Status.COMPLETE.value,
                    results=o.results,
                    error=None,
                    next_attempt_at=None,
                    processed_at=now,
                )
                reason = "succeeded"
            else:
                last = o.permanent or v.attempts >= (v.retry_limit if v.retryable else 1)
                delay = backoff_seconds(v.attempts, s.backoff_base, s.backoff_max, o.retry_after)
                new = replace(
                    v,
                    status=Status.ERROR.value,
                    error=o.error,
                    next_attempt_at=None if last else now + timedelta(seconds=delay),
                    processed_at=now if last else None,
                )
                err = o.error or {}
                reason = f"{err.get('error_class', 'error')}: {err.get('message', '')}"
            p.views[o.name] = new
            rows.append(
                {
                    "id": v.workflow_step_id,
                    "status": new.status,
                    "results": new.results,
                    "error": new.error,
                    "next_at": new.next_attempt_at,
                    "done_at": new.processed_at,
                }
            )
            changes.append(
                StepChange(
                    v.workflow_step_id,
                    v.name,
                    Status(v.status),
                    Status(new.status),
                    v.attempts,
                    reason,
                    None if o.ok else o.error,
                )
            )
        leases.write_outcomes(conn, rows, now)
        p.changes += changes
        leases.write_annotations(conn, p.lease.task_id, p.annotations, now)
        p.annotations = []

    def _advance(self, conn: Connection, p: _Pass, now: datetime) -> list[StepView]:
        """Start what is ready (within the concurrency bound), or end the pass."""
        decision = plan(p.states(), now, p.running.keys())
        if decision.verdict is Verdict.RUN:
            busy = sum(1 for r in p.running.values() if not r.abandoned)
            room = self._settings.max_concurrent_steps - busy
            if self._stopping.is_set():
                room = 0
            chosen = [p.views[n] for n in decision.ready[: max(room, 0)]]
            leases.start_steps(conn, [v.workflow_step_id for v in chosen], now)
            p.changes += [
                StepChange(
                    v.workflow_step_id,
                    v.name,
                    Status(v.status),
                    Status.IN_PROGRESS,
                    v.attempts + 1,
                    "started",
                )
                for v in chosen
            ]
            started = []
            for v in chosen:
                p.views[v.name] = replace(
                    v,
                    status=Status.IN_PROGRESS.value,
                    attempts=v.attempts + 1,
                    last_attempted_at=now,
                    next_attempt_at=None,
                )
                started.append(p.views[v.name])
            if not p.running and not started:
                # Shutting down with nothing in flight: hand the task back, due now.
                leases.finish(conn, p.lease, None, now, now, "worker shutting down")
                p.notify_at = now
            return started
        if decision.verdict is Verdict.WAIT:
            leases.finish(conn, p.lease, None, decision.wake_at, now, "waiting for a retry")
            p.notify_at = decision.wake_at
        elif decision.verdict is Verdict.COMPLETE:
            leases.finish(conn, p.lease, Status.COMPLETE, None, now, "all steps done")
        else:
            failed = [n for n, v in p.views.items() if v.status == Status.ERROR.value]
            leases.finish(
                conn, p.lease, Status.ERROR, None, now, f"no attempt left for: {', '.join(failed)}"
            )
        return []

    def _launch(self, p: _Pass, started: list[StepView]) -> None:
        """After the commit: send what it scheduled, then start the steps' threads."""
        if p.notify_at is not None:
            at, p.notify_at = p.notify_at, None
            self._notify(p.lease.task_id, at)
        if not started:
            return
        sequence = p.sequence()
        context = p.row["context"]
        for view in started:
            tpl = p.reg.steps[view.name]
            token = object()
            limit = tpl.timeout or self._settings.step_timeout
            p.running[view.name] = _Running(token, time.monotonic() + limit)
            hstep = HandlerStep(view)
            hstep.inputs = copy.deepcopy(context if view.inputs is None else view.inputs)
            threading.Thread(
                target=run_handler,
                args=(tpl, HandlerTask(p.row), sequence, hstep, token, p.outcomes.put),
                name=f"tasker-step-{p.lease.task_id}-{view.name}",
                daemon=True,
            ).start()

    def _now(self) -> datetime:
        return as_utc(self._clock())
