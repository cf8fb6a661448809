"""The engine pass: what one task message does.

Claim the task's lease, then loop: start the ready steps (each in its own
thread, at most `max_concurrent_steps` at once), wait for outcomes, and record
them in one short lease-fenced transaction that also starts the steps they
made ready. A task whose steps all succeed finishes in one delivery; when only
backoffs remain the pass stores the next run time, releases the lease and has
the message sent again with that delay.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import sqlalchemy as sa

from tasker.core import flow, spawns, writes
from tasker.core.clock import as_utc, maybe_utc
from tasker.core.events import Event
from tasker.core.states import Status
from tasker.core.views import StepView
from tasker.definition.handler import TaskHandler
from tasker.definition.registry import HandlerFactory, RegisteredTask
from tasker.engine.attempt_tx import Held
from tasker.engine.items import ItemRunner
from tasker.engine.keeping import FailStop, Retrier, halt_process
from tasker.engine.observer import Observers
from tasker.engine.outcome import Outcome, describe, observed, run_handler
from tasker.engine.runtime import HandlerStep, HandlerTask, StepSequence, json_copy
from tasker.engine.slots import Slots
from tasker.engine.spawning import Spawner, awaited_children, awaiting_children
from tasker.engine.threads import ElasticThreads
from tasker.engine.transactional import (
    PassTransactions,
    StepTransactions,
    TransactionLost,
    lost,
)
from tasker.errors import (
    ConfigurationError,
    LeaseLostError,
    StaleRevisionError,
    StepTimeoutError,
    UnknownTaskError,
)
from tasker.settings import Settings
from tasker.store import lease as leases
from tasker.store import schema as m
from tasker.store.base import Store
from tasker.store.catalog import Catalog
from tasker.store.db import Database
from tasker.store.events import read_events
from tasker.store.limits import Limits
from tasker.store.steps import inputs_of, read_steps, views_of

log = logging.getLogger("tasker.engine")
_T = TypeVar("_T")


#: Called after a commit that scheduled the task: (task_id, deliver_at).
Notify = Callable[[int, datetime], None]

#: Called after a commit that ended a task owing `on_finish`: (task_id, finish_due_at as
#: written, which the call is claimed by; see `tasker.control.finishing`).
Finished = Callable[[int, datetime], None]


@dataclass
class _Running:
    token: object
    deadline: float  # time.monotonic()
    # Timed out and recorded as failed, but its thread still runs (Python cannot kill
    # it): the step is not started again, here or elsewhere, until the thread ends.
    abandoned: bool = False
    held: Held | None = None  # a transactional step's open transaction


@dataclass
class _Pass:
    """Everything one engine pass knows about its task."""

    lease: leases.Lease
    reg: RegisteredTask
    row: dict[str, Any]
    revision: int
    tx_seq: int  # the task's transaction number after our last write
    views: dict[str, StepView]
    running: dict[str, _Running] = field(default_factory=dict)
    outcomes: queue.SimpleQueue[Outcome] = field(default_factory=queue.SimpleQueue)
    notify_at: datetime | None = None  # a message to send once the transaction commits
    wake_at: datetime | None = None  # the app-clock time a waiting retry becomes due
    annotations: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # time.monotonic() until which the lease is surely ours with a margin (see _keep).
    safe_until: float = 0.0
    # A step asked to pause or cancel the task ("pause"/"cancel", the reason): no step
    # starts; a pause ends the pass once the running steps are recorded (`writes.decide`).
    asked: tuple[str, str] | None = None
    ended: bool = False  # a write ended the pass (finished or released the task)
    owed: datetime | None = None  # an ending owes `on_finish`: its `finish_due_at`
    txn: PassTransactions = field(default_factory=PassTransactions)  # transactional steps
    # The events the last write's started steps run with, by step name.
    started_events: dict[str, Event] = field(default_factory=dict)
    # The task's events (`tasker.core.events`), read when a step waits for one.
    events: list[Event] = field(default_factory=list)
    # The limit slots its running steps hold (`tasker.engine.slots`).
    slots: Slots | None = None
    # The awaited children of steps awaiting them, by step name: (task id, status).
    children: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    sends: list[int] = field(default_factory=list)  # tasks to message after the commit

    def sequence(self) -> StepSequence:
        return StepSequence(self.views.get, tuple(self.views))

    def snapshot(self) -> _Snapshot:
        return (
            dict(self.views),
            dict(self.running),
            self.revision,
            list(self.annotations),
            self.asked,
            list(self.events),
        )

    def restore(self, saved: _Snapshot) -> None:
        views, running, self.revision, annotations, self.asked, events = saved
        self.views, self.running, self.annotations = dict(views), dict(running), list(annotations)
        self.events = list(events)
        self.notify_at = None


_Snapshot = tuple[
    dict[str, StepView],
    dict[str, "_Running"],
    int,
    list[tuple[int, dict[str, Any]]],
    tuple[str, str] | None,
    list[Event],
]


class Engine:
    """Runs engine passes for one app; thread-safe (one pass per task message)."""

    def __init__(
        self,
        db: Database,
        store: Store,
        factory: HandlerFactory,
        catalog: Catalog,
        settings: Settings,
        clock: Callable[[], datetime],
        owner: Callable[[], str],
        notify: Notify,
        observer: Observers | None = None,
        finished: Finished | None = None,
    ) -> None:
        self._db = db
        self._finished = finished
        self._store = store
        self._factory = factory
        self._catalog = catalog
        self._settings = settings
        self._clock = clock
        self._owner = owner
        self._notify = notify
        self._observer = observer or Observers()
        self._stopping = threading.Event()
        self._threads = ElasticThreads("tasker-step")
        self._rules = writes.Rules(
            settings.backoff_base, settings.backoff_max, settings.max_concurrent_steps
        )
        self._retrier = Retrier(db, settings.lease_seconds)
        self._retrying = self._retrier.run
        self._txn = self.transactions = StepTransactions(db, store, self._retrier)
        #: The limits per dependent system (`Tasker.limit` stores them through it).
        self.limits = Limits(db)
        self._spawner = Spawner(db, catalog, factory, clock)
        self._items = ItemRunner(db, settings, clock, self._observer)
        #: What to do when a lease cannot be kept while attempts run (tests replace it).
        self.fail_stop: FailStop = halt_process

    def stop(self) -> None:
        """Ask running passes to start no new steps and hand their tasks back."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Whether `stop` was called (and not undone by `resume`)."""
        return self._stopping.is_set()

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
        failed: BaseException | None = None
        try:
            p = self._claim(task_id)
            if p is not None:
                self._loop(p)
                if p.owed is not None and self._finished is not None:
                    self._finished(task_id, p.owed)  # before waiting out abandoned threads
        except LeaseLostError as exc:
            self._observer.on_lease_lost(task_id)
            log.info("task %s: %s; stopping this pass", task_id, exc)
        except Exception as exc:
            failed = exc
            log.exception("task %s: engine pass failed; the sweeper will pick it up", task_id)
            return False
        finally:
            if p is not None:
                if p.running:
                    p.txn.end(p.running)
                    self._wait_out(p)
                if p.slots is not None:  # nothing runs: no slot is held
                    p.slots.keep_only(task_id, (), self._now())
                self._observer.on_pass_finished(task_id, p.reg.name, failed)
        return True

    def _wait_out(self, p: _Pass) -> None:
        """Wait for this pass's step threads before returning, keeping the lease meanwhile.

        A new owner must not start a step while the old attempt is alive (each attempt
        ends by its time limit, but an abandoned thread may run on). So the lease is
        renewed, retrying through a database outage; if it cannot be renewed in time,
        or another worker took it, `fail_stop` ends the attempts (by default, the
        process). A task cancelled meanwhile is left alone: no one runs it again.
        """
        renew_at: float | None = time.monotonic()
        while self._still_running(p):
            if renew_at is not None and time.monotonic() >= renew_at:
                renew_at = self._keep(p)
            at_most = None if renew_at is None else max(0.0, renew_at - time.monotonic())
            self._still_running(p, at_most)

    def _still_running(self, p: _Pass, at_most: float | None = 0.0) -> bool:
        """Take the outcomes that arrived (waiting `at_most` seconds); is any thread alive?

        An attempt past its time limit still counts: its thread lives until it returns.
        """
        for o in self._wait(p, at_most):
            if o.held is not None:
                o.held.close()
            if o.timed_out:
                p.running[o.name].abandoned = True
            else:
                p.running.pop(o.name, None)
        return bool(p.running)

    def _keep(self, p: _Pass) -> float | None:
        """Try once to renew the lease while attempts run; fail-stop when it is too late.

        Returns:
            When to try again, or None to stop renewing.
        """
        renew_every = self._settings.lease_seconds / 3
        try:
            self._renew(p, once=True)
            return time.monotonic() + renew_every
        except LeaseLostError:
            self._observer.on_lease_lost(p.lease.task_id)
            if self._taken_over(p) and self._still_running(p):
                self._halt(p, "another worker took the lease while an attempt runs here")
            return None
        except Exception as exc:  # the database is away (or worse): retry until too late
            if time.monotonic() >= p.safe_until and self._still_running(p):
                self._halt(p, f"the lease could not be renewed in time ({exc})")
                return None
            log.warning("task %s: renewing the lease failed: %s", p.lease.task_id, exc)
            # Try again soon, and at the latest when the lease stops being safely ours.
            return min(time.monotonic() + min(1.0, renew_every), p.safe_until)

    def _halt(self, p: _Pass, why: str) -> None:
        self.fail_stop(p.lease.task_id, f"{why}: {', '.join(p.running)}")

    def _taken_over(self, p: _Pass) -> bool:
        """Whether the task is live under someone else's lease (assumed if it cannot be read)."""
        try:
            with self._db.read() as conn:
                row = conn.execute(
                    sa.select(m.tasks.c.status, m.tasks.c.lease_owner, m.tasks.c.lease_epoch).where(
                        m.tasks.c.task_id == p.lease.task_id
                    )
                ).one()
        except Exception:
            return True
        mine = row.lease_owner == p.lease.owner and row.lease_epoch == p.lease.epoch
        return row.status == Status.IN_PROGRESS.value and not mine

    def _keep_seconds(self) -> float:
        """How long after a renewal is sent the lease still counts as ours.

        Two thirds of it, leaving a third as margin for clocks and a thread short of the GIL.
        """
        return self._settings.lease_seconds * 2 / 3

    def _until(self, p: _Pass) -> float | None:
        """How long a write of the pass may retry (a `time.monotonic()`, or None).

        While attempts run, only while the lease is safely ours (then `_wait_out`
        decides); else a lease period.
        """
        return p.safe_until if p.running else None

    def _renew(self, p: _Pass, *, once: bool = False) -> None:
        """Renew the lease, and nothing else (a steering call meanwhile: read again).

        Args:
            once: try once, and let a database error through (else retry, see `_retrying`).
        """
        while True:
            now, sent = self._now(), time.monotonic()
            w = leases.TaskWrite(
                p.lease, p.revision, now, now + timedelta(seconds=self._settings.lease_seconds)
            )
            try:
                self._apply(p, w, sent, once=once)
            except StaleRevisionError:
                self._reload(p)
                continue
            return

    def _apply(self, p: _Pass, w: leases.TaskWrite, sent: float, *, once: bool = False) -> None:
        """Send one fenced write of the pass and note what it gave the task.

        Args:
            sent: `time.monotonic()` before the write was built: the lease it renews counts
                as ours from then on (see `_keep_seconds`).
            once: try once, and let a database error through (else retry, see `_retrying`).

        Raises:
            StaleRevisionError: a steering call changed the task; nothing was written.
        """
        seq = p.tx_seq + 1
        if p.txn.via is not None:  # SQLite: inside the transactional step's transaction
            written: int | None = self._store.apply(w, caller=p.txn.via)
        elif once:
            written = self._store.apply(w)
        else:
            written = self._retrying(
                p.lease.task_id, partial(self._store.apply, w), (seq, p.revision), self._until(p)
            )
        p.tx_seq = seq if written is None else written
        p.safe_until = sent + self._keep_seconds()
        if p.slots is not None and w.finish is None:  # the slots last as long as the lease
            p.slots.renew(w.lease_until)

    # -- claiming -----------------------------------------------------------------

    def _claim(self, task_id: int) -> _Pass | None:
        now = self._now()
        s = self._settings
        owner = self._owner()
        expires = now + timedelta(seconds=s.lease_seconds)
        sent = time.monotonic()
        claimed = self._retrying(task_id, partial(self._store.claim, task_id, owner, now, expires))
        if claimed is None:
            return None
        row = claimed.task
        name = self._retrying(task_id, partial(self._catalog.task_name, row["named_task_id"]))
        assert name is not None  # only a write that landed returns None
        row["name"], row["version"] = name
        try:
            reg = self._factory.get(row["name"], row["version"])
        except UnknownTaskError as exc:
            # Another worker may know this handler: hand the task back for later.
            log.error("task %s: %s; releasing it", task_id, exc)
            later = now + timedelta(seconds=s.lease_seconds)
            release = leases.TaskWrite(
                claimed.lease,
                int(row["revision"]),
                now,
                now,
                finish=leases.Finish(None, later, "handler not registered here"),
            )
            self._retrying(task_id, partial(self._store.apply, release))
            return None
        views = views_of(claimed.steps)
        p = _Pass(claimed.lease, reg, row, int(row["revision"]), int(row["tx_seq"]), views)
        p.slots = Slots(self.limits, self._notify, s.lease_seconds)
        if _waits_for_events(views):
            p.events = self._retrying(task_id, partial(self._events, task_id)) or []
        p.safe_until = sent + self._keep_seconds()
        p.children = self._children(p, p.views)
        due, trace = row.get("next_run_at"), row.get("trace_context")
        self._observer.on_pass_started(task_id, reg.name, due and as_utc(due), now, trace)
        try:
            self._launch(p, self._commit(p, [], now, recover=True))
        except BaseException as exc:  # no pass to return: it ends here
            self._observer.on_pass_finished(task_id, reg.name, exc)
            raise
        return p

    # -- the loop -----------------------------------------------------------------

    def _loop(self, p: _Pass) -> None:
        while p.running and not p.ended:
            gated = p.txn.gate(self._wait(p), p.running, p.outcomes.put, self._txn.exclusive)
            if gated is None:
                continue
            batch = gated
            try:
                if batch:
                    self._annotate(p, batch)
                now = self._now()  # after update_annotations, which may take a while
                started = self._commit(p, batch, now)
            except BaseException:
                # These attempts have returned: nothing is left to wait for on their account.
                for o in batch:
                    if o.held is not None:
                        o.held.close()
                    if not o.timed_out:
                        p.running.pop(o.name, None)
                raise
            finally:
                p.txn.via = None
            self._launch(p, started)

    def _commit(
        self,
        p: _Pass,
        batch: list[Outcome],
        now: datetime,
        *,
        recover: bool = False,
    ) -> list[StepView]:
        """Record a batch of outcomes and start what they made ready: one write.

        With no outcomes it renews the lease, and starts the retries now due.

        The write is planned from what the pass knows; if a steering call changed the
        task meanwhile, the steps are read again and the write planned again.

        Returns:
            The steps it started.
        """
        before = p.snapshot()
        refreshed = False
        slots = p.slots
        assert slots is not None
        # The slots of the attempts that ended go back first: this write may start the
        # next step of their systems.
        slots.release(p.lease.task_id, [o.name for o in batch], now)
        limited: dict[str, tuple[str, datetime | None]] = {}
        lease_until = now + timedelta(seconds=self._settings.lease_seconds)
        while True:
            self._track(p, batch)
            d = writes.decide(
                p.views,
                batch,
                now,
                self._rules,
                running=p.running.keys(),
                busy=sum(1 for r in p.running.values() if not r.abandoned),
                stopping=self._stopping.is_set(),
                recover=recover,
                steps=p.reg.steps,
                created_at=as_utc(p.row["created_at"]),
                asked=p.asked,
                deadline=maybe_utc(p.row.get("deadline_at")),
                events=p.events,
                children=p.children,
                limited=limited,
                limit_waited=slots.waited,
            )
            if d.idle and not refreshed:  # children may have ended since they were read
                refreshed = True
                p.children = self._children(p, {**p.views, **d.steps})
                continue
            refused = slots.take(p.lease.task_id, p.views, d.started, now, lease_until)
            if refused or slots.replan:  # plan again without the steps refused a slot
                for name, (system, _) in refused.items():
                    if name not in limited:
                        self._observer.on_limit_wait(p.reg.name, name, system)
                limited.update(refused)
                continue
            nudge = spawns.parent_to_wake(d.finish, p.row)
            w = leases.TaskWrite(
                p.lease,
                p.revision,
                now,
                lease_until,
                steps=list(d.steps.values()),
                step_changes=d.changes,
                annotations=p.annotations,
                finish=d.finish,
                callback=p.reg.has_on_finish,
                consumed=d.consumed,
                spawned=d.spawned,
                nudge=nudge,
            )
            txo = next((o for o in batch if o.held is not None), None)
            try:
                if txo is None:
                    self._apply(p, w, time.monotonic())
                else:
                    complete = d.steps[txo.name].status == Status.COMPLETE.value
                    self._apply_held(p, w, txo, complete)
            except StaleRevisionError:
                p.restore(before)
                self._reload(p)
                before = p.snapshot()
                continue
            except TransactionLost as exc:
                # Nothing landed, the step's writes with it: record the attempt as failed.
                p.restore(before)
                p.txn.via = None
                batch = [lost(o, exc) if o is txo else o for o in batch]
                continue
            self._landed(p, d, w, nudge)
            return [p.views[n] for n in d.started]

    def _landed(self, p: _Pass, d: writes.Write, w: leases.TaskWrite, nudge: int | None) -> None:
        """Bring the pass up to date with a write that landed."""
        slots = p.slots
        assert slots is not None
        p.views.update(d.steps)
        p.annotations, p.wake_at, p.notify_at = [], d.wake_at, d.notify_at
        p.asked, p.ended = d.asked, d.finish is not None
        if d.consumed:
            by = dict(d.consumed)
            p.events = [
                replace(e, consumed_by=by[e.event_id]) if e.event_id in by else e for e in p.events
            ]
        p.started_events = d.events
        slots.keep_only(p.lease.task_id, p.running.keys() | set(d.started), w.now)
        p.sends = [int(c.values["task_id"]) for c in d.spawned]
        p.sends += [] if nudge is None else [nudge]
        if w.owes_callback():
            p.owed = w.lease_until

    def _apply_held(self, p: _Pass, w: leases.TaskWrite, o: Outcome, complete: bool) -> None:
        """`_apply` through a transactional step's transaction, committing it.

        Raises:
            As `StepTransactions.record`.
        """
        sent = time.monotonic()
        p.tx_seq = self._txn.record(o, w, complete, (p.tx_seq + 1, p.revision))
        p.safe_until = sent + self._keep_seconds()

    def _children(self, p: _Pass, views: dict[str, StepView]) -> dict[str, list[tuple[int, str]]]:
        """Read the awaited children of the steps awaiting them (no read if none does)."""
        steps = awaiting_children(views.values())
        if not steps:
            return {}
        read = partial(awaited_children, self._db, steps)
        got = self._retrying(p.lease.task_id, read, None, self._until(p))
        assert got is not None  # only a write that landed returns None
        return got

    @staticmethod
    def _track(p: _Pass, outcomes: list[Outcome]) -> None:
        """Take the attempts that ended off `p.running`.

        One past its time limit is abandoned instead: its thread runs on, and its step
        is not started again meanwhile.
        """
        for o in outcomes:
            if o.timed_out:  # a new object: a snapshot taken before keeps the old one
                p.running[o.name] = replace(p.running[o.name], abandoned=True)
            else:
                p.running.pop(o.name, None)

    def _reload(self, p: _Pass) -> None:
        """Read the task's steps again after a steering call; ours in flight stay as known.

        The read is retried while the database is away, as writes are.
        """
        read = self._retrying(
            p.lease.task_id, partial(self._read, p.lease.task_id), None, self._until(p)
        )
        assert read is not None  # only a write that landed returns None
        task, rows, events = read
        fresh = views_of(rows)
        p.events = events
        # A running step keeps the state this pass gave it (the columns the engine writes),
        # and takes what steering may change meanwhile (its inputs, its retry limit). A step
        # whose attempt was abandoned (timed out, its thread still running) has its time-out
        # recorded: what is stored is what steering made of it since, and it is taken whole.
        p.views = {
            n: (replace(v, **{c: getattr(p.views[n], c) for c in m.STEP_WRITE}))
            if n in p.running and not p.running[n].abandoned
            else v
            for n, v in fresh.items()
        }
        p.revision, p.tx_seq = int(task.revision), int(task.tx_seq)
        p.children = self._children(p, p.views)

    def _read(self, task_id: int) -> tuple[Any, list[Any], list[Event]]:
        """The task's revision and transaction number, its step rows and its events."""
        with self._db.read() as conn:
            task = conn.execute(
                sa.select(m.tasks.c.revision, m.tasks.c.tx_seq).where(m.tasks.c.task_id == task_id)
            ).one()
            rows = read_steps(conn, [task_id])
            waiting = any(getattr(r, "wait_for", None) for r in rows)
            return task, rows, read_events(conn, task_id) if waiting else []

    def _events(self, task_id: int) -> list[Event]:
        """The task's events (a step of it waits for one)."""
        with self._db.read() as conn:
            return read_events(conn, task_id)

    def _wait(self, p: _Pass, at_most: float | None = None) -> list[Outcome]:
        """Wait for outcomes, time-outs, a retry's due time or the next lease renewal.

        An abandoned attempt whose thread ended leaves `p.running` (its step may be
        planned again); the write that follows any wake-up plans again.

        Args:
            at_most: seconds to wait at most (default: until the next renewal is due).

        Returns:
            The outcomes to record.
        """
        renew_every = self._settings.lease_seconds / 3 if at_most is None else at_most
        deadlines = [r.deadline for r in p.running.values() if not r.abandoned]
        clock = time.monotonic()
        if p.wake_at is not None:  # a retry due while siblings run: start it on time
            deadlines.append(clock + (p.wake_at - self._now()).total_seconds())
        nearest = min(deadlines, default=clock + renew_every)
        timeout = max(0.0, min(nearest - clock, renew_every))
        arrived: list[Outcome] = []
        try:
            arrived.append(p.outcomes.get(timeout=timeout))
            while True:
                arrived.append(p.outcomes.get_nowait())
        except queue.Empty:
            pass
        batch = []
        for o in arrived:
            r = p.running.get(o.name)
            if r is None or r.token is not o.token or r.abandoned:
                if o.held is not None:  # a transactional outcome that no longer counts
                    o.held.close()
                if r is not None and r.token is o.token:  # came too late; the step is free
                    del p.running[o.name]
                continue
            batch.append(o)
        clock = time.monotonic()
        named = {o.name for o in batch}
        for name, r in p.running.items():
            if not r.abandoned and r.deadline <= clock and name not in named:
                if r.held is not None:  # its writes must not commit late: roll them back
                    r.held.abort()
                batch.append(Outcome.after_time_limit(name, r.token, self._limit(p, name)))
        return batch

    def _annotate(self, p: _Pass, batch: list[Outcome]) -> None:
        """Call `update_annotations` with the steps just processed, outside any transaction.

        It runs on a thread of its own under the `step_timeout` time limit, the pass
        renewing the lease meanwhile; a failure or a time-out is recorded as a
        `tasker.update_annotations_error` annotation, and the pass goes on.
        """
        wanted = [a for o in batch for a in o.annotations]
        if type(p.reg.handler).update_annotations is not TaskHandler.update_annotations:
            wanted += self._update_annotations(p, batch)
        if not wanted:
            return
        now, task_id = self._now(), p.lease.task_id
        ids = [
            self._retrying(
                task_id,
                partial(self._catalog.annotation_type_id, t, now, p.txn.via),
                None,
                self._until(p),
            )
            for t, _ in wanted
        ]
        p.annotations = [(int(i or 0), a) for i, (_, a) in zip(ids, wanted, strict=True)]

    def _update_annotations(
        self, p: _Pass, batch: list[Outcome]
    ) -> list[tuple[str, dict[str, Any]]]:
        """The annotations the handler's `update_annotations` adds for `batch`."""
        htask = HandlerTask(p.row)
        steps = []
        for o in batch:
            done = Status.COMPLETE.value if o.ok else Status.ERROR.value
            done = flow.LEAVES.get(o.flow or "", done)  # a flow request: where it leaves it
            seen = (o.results, None) if o.ok else (None, o.error)
            # The handler's copies (HandlerStep): what it mutates is not what is stored.
            # It sees each step's inputs as the step's handler did (stored, else the context).
            v = p.views[o.name]
            shown = inputs_of(v, p.row["context"])
            view = replace(v, status=done, results=seen[0], error=seen[1], inputs=shown)
            steps.append(HandlerStep(view))
        failure = self._call_update_annotations(p, htask, steps)
        if failure is None:
            return htask.take_annotations()
        log.error("task %s: update_annotations failed: %s", p.lease.task_id, failure)
        return [("tasker.update_annotations_error", describe(failure))]

    def _call_update_annotations(
        self, p: _Pass, htask: HandlerTask, steps: list[HandlerStep]
    ) -> BaseException | None:
        """Run the handler's `update_annotations`; returns what it raised, or None."""
        done: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        sequence = p.sequence()

        def call() -> None:
            try:
                p.reg.handler.update_annotations(htask, sequence, steps)
                done.put(None)
            except BaseException as exc:
                done.put(exc)

        self._threads.submit(call)
        limit = self._settings.step_timeout
        end, renew_every = time.monotonic() + limit, self._settings.lease_seconds / 3
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return StepTimeoutError(
                    f"update_annotations ran past its time limit of {limit:g} s"
                )
            try:
                return done.get(timeout=min(left, renew_every))
            except queue.Empty:
                self._renew(p)

    def _launch(self, p: _Pass, started: list[StepView]) -> None:
        """After the commit: send what it scheduled, then start the steps' threads."""
        if p.notify_at is not None:
            at, p.notify_at = p.notify_at, None
            self._notify(p.lease.task_id, at)
        if p.sends:  # spawned children, and a parent this task's end wakes
            sends, p.sends, now = p.sends, [], self._now()
            for task_id in sends:
                self._notify(task_id, now)
        turn = p.txn.take_turn(p.running)
        if turn is not None:  # SQLite: a transactional step deferred until now
            name, args = turn
            p.running[name].deadline = time.monotonic() + self._limit(p, name)
            p.running[name].held = self._txn.start(self._threads.submit, *args)
        if not started:
            return
        sequence = p.sequence()
        context = p.row["context"]
        # Observed attempts report on their own thread (`observed`); none: no wrapper.
        run = partial(observed, self._observer, p.reg.name) if self._attempts_seen() else None
        for view in started:
            token = object()
            p.running[view.name] = _Running(token, time.monotonic() + self._limit(p, view.name))
            tpl = p.reg.steps.get(view.name)
            if tpl is None:  # the registration changed since the task was created
                p.outcomes.put(_no_handler(p, view.name, token))
                continue
            # HandlerStep copies the inputs (by default the task's context) on first read.
            hstep = HandlerStep(view, inputs_of(view, context))
            event = p.started_events.get(view.name)
            if event is not None:
                hstep.event = json_copy(event.payload)
            hstep._spawner, hstep._task_id = self._spawner, p.lease.task_id
            if tpl.for_each is not None:  # the item runner is the step's attempt
                items = (p.row, sequence, view, hstep.inputs, p.lease, token, p.outcomes.put)
                self._threads.submit(self._items.run, tpl, *items)
                continue
            args = (
                tpl,
                HandlerTask(p.row),
                sequence,
                hstep,
                token,
                p.outcomes.put,
                getattr(p.reg.handler, "cancel_if", None),
            )
            attempt = partial(run, p.lease.task_id, view.attempts) if run else run_handler
            if not tpl.transactional:
                self._threads.submit(attempt, *args)
            elif self._txn.exclusive and p.txn.in_flight(p.running, view.name):
                # SQLite: one transaction (write lock) at a time
                p.txn.defer(view.name, p.running[view.name], (attempt, *args))
            else:
                p.running[view.name].held = self._txn.start(self._threads.submit, attempt, *args)

    def _attempts_seen(self) -> bool:
        obs = self._observer
        return obs.wants("on_attempt_started") or obs.wants("on_attempt_finished")

    def _limit(self, p: _Pass, name: str) -> float:
        """The time limit of one attempt of step `name`, in seconds."""
        tpl = p.reg.steps.get(name)
        if tpl is not None and tpl.for_each is not None:
            return math.inf  # the step's `timeout` bounds each item (`tasker.engine.items`)
        limit = (tpl.timeout if tpl is not None else None) or self._settings.step_timeout
        return self._txn.time_limit(limit) if tpl is not None and tpl.transactional else limit

    def _now(self) -> datetime:
        return as_utc(self._clock())


def _waits_for_events(views: dict[str, StepView]) -> bool:
    return any(v.wait_for is not None for v in views.values())


def _no_handler(p: _Pass, name: str, token: object) -> Outcome:
    """The outcome of a step that this worker's registration of the task does not have.

    The task runs the DAG it was created with; a step since renamed or removed from
    its registration fails at once, for good (a person registers it again and retries).
    """
    reg = p.reg
    error = ConfigurationError(
        f"task {reg.name!r} version {reg.version!r} as registered here has no step {name!r} "
        f"(it has: {list(reg.steps)}); the task runs the steps it was created with: register "
        "the step again (give a changed DAG a new version) and retry the task"
    )
    return Outcome(name, token, ok=False, error=describe(error), permanent=True)
