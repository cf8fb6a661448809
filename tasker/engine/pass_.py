"""The engine pass: what one task message does.

Claim the task's lease, then loop: start the ready steps (each in its own
thread, at most `max_concurrent_steps` at once), wait for outcomes, and record
them in one short lease-fenced transaction that also starts the steps they
made ready. A task whose steps all succeed finishes in one delivery; when only
backoffs remain the pass stores the next run time, releases the lease and has
the message sent again with that delay.

The pass's parts: its state (`pass_state`), its reads and writes (`pass_io`),
waiting for outcomes (`gathering`), recording them (`recording`), annotations
(`annotating`) and starting attempts (`launching`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

from tasker.core.clock import as_utc
from tasker.definition.registry import HandlerFactory
from tasker.engine.annotating import Annotator
from tasker.engine.gathering import Gatherer
from tasker.engine.items import ItemRunner
from tasker.engine.keeping import FailStop, Retrier, halt_process
from tasker.engine.launching import Launcher, Notify
from tasker.engine.observer import Observers
from tasker.engine.pass_io import PassIO
from tasker.engine.pass_state import Pass, waits_for_events
from tasker.engine.recording import Recorder
from tasker.engine.slots import Slots
from tasker.engine.spawning import Spawner
from tasker.engine.threads import ElasticThreads
from tasker.engine.transactional import StepTransactions
from tasker.errors import LeaseLostError, UnknownTaskError
from tasker.settings import Settings
from tasker.store import lease as leases
from tasker.store.base import Store
from tasker.store.catalog import Catalog
from tasker.store.db import Database
from tasker.store.limits import Limits
from tasker.store.steps import views_of

log = logging.getLogger("tasker.engine")

__all__ = ["Engine", "Finished", "Notify"]

#: Called after a commit that ended a task owing `on_finish`: (task_id, finish_due_at as
#: written, which the call is claimed by; see `tasker.control.finishing`).
Finished = Callable[[int, datetime], None]


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
        threads = ElasticThreads("tasker-step")
        retrier = Retrier(db, settings.lease_seconds)
        self._retrying = retrier.run
        self._txn = self.transactions = StepTransactions(db, store, retrier)
        #: The limits per dependent system (`Tasker.limit` stores them through it).
        self.limits = Limits(db)
        self._io = PassIO(db, store, settings, retrier, self._txn, self._now)
        self._rec = Recorder(self._io, settings, self._observer, self._stopping)
        self._gather = Gatherer(settings, self._txn, self._now)
        self._ann = Annotator(self._io, catalog, settings, threads, self._now)
        spawner = Spawner(db, catalog, factory, clock)
        items = ItemRunner(db, settings, clock, self._observer)
        self._launcher = Launcher(
            notify, self._txn, threads, spawner, items, self._observer, self._gather, self._now
        )
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
        p: Pass | None = None
        failed: BaseException | None = None
        try:
            p = self._claim(task_id)
            if p is not None:
                self._loop(p)
                if p.idle:
                    self._nudged(p)
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

    def _nudged(self, p: Pass) -> None:
        """After an idle release: if the task was nudged while this pass held it, run it again.

        A nudge (an awaited child ended, a signal, a freed limit slot) is an outbox row
        and a message; the message's claim fails while the pass holds the lease, and the
        pass may have planned its last write before the nudge's cause was stored. The
        claim deleted the task's due rows, so a due row now came during the pass: one
        read after the release decides, and a nudge after it claims the task itself.
        (A task released until a due time is not claimed before it, nudged or not.)
        """
        now = self._now()
        try:
            nudged = self._io.nudged(p.lease.task_id, now)
        except Exception as exc:  # the sweeper re-sends the row's message in time
            log.warning("task %s: checking for nudges failed: %s", p.lease.task_id, exc)
            return
        if nudged:
            self._notify(p.lease.task_id, now)

    def _wait_out(self, p: Pass) -> None:
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

    def _still_running(self, p: Pass, at_most: float | None = 0.0) -> bool:
        """Take the outcomes that arrived (waiting `at_most` seconds); is any thread alive?

        An attempt past its time limit still counts: its thread lives until it returns.
        """
        for o in self._gather.wait(p, at_most):
            if o.held is not None:
                o.held.close()
            if o.timed_out:
                p.running[o.name].abandoned = True
            else:
                p.running.pop(o.name, None)
        return bool(p.running)

    def _keep(self, p: Pass) -> float | None:
        """Try once to renew the lease while attempts run; fail-stop when it is too late.

        Returns:
            When to try again, or None to stop renewing.
        """
        renew_every = self._settings.lease_seconds / 3
        try:
            self._io.renew(p, once=True)
            return time.monotonic() + renew_every
        except LeaseLostError:
            self._observer.on_lease_lost(p.lease.task_id)
            if self._io.taken_over(p) and self._still_running(p):
                self._halt(p, "another worker took the lease while an attempt runs here")
            return None
        except Exception as exc:  # the database is away (or worse): retry until too late
            if time.monotonic() >= p.safe_until and self._still_running(p):
                self._halt(p, f"the lease could not be renewed in time ({exc})")
                return None
            log.warning("task %s: renewing the lease failed: %s", p.lease.task_id, exc)
            # Try again soon, and at the latest when the lease stops being safely ours.
            return min(time.monotonic() + min(1.0, renew_every), p.safe_until)

    def _halt(self, p: Pass, why: str) -> None:
        self.fail_stop(p.lease.task_id, f"{why}: {', '.join(p.running)}")

    def _claim(self, task_id: int) -> Pass | None:
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
        p = Pass(claimed.lease, reg, row, int(row["revision"]), int(row["tx_seq"]), views)
        p.slots = Slots(self.limits, self._notify, s.lease_seconds)
        if waits_for_events(views):
            p.events = self._retrying(task_id, partial(self._io.events, task_id)) or []
        p.safe_until = sent + self._io.keep_seconds()
        p.children = self._io.children(p, p.views)
        due, trace = row.get("next_run_at"), row.get("trace_context")
        self._observer.on_pass_started(task_id, reg.name, due and as_utc(due), now, trace)
        try:
            self._launcher.launch(p, self._rec.commit(p, [], now, recover=True))
        except BaseException as exc:  # no pass to return: it ends here
            self._observer.on_pass_finished(task_id, reg.name, exc)
            raise
        return p

    def _loop(self, p: Pass) -> None:
        while p.running and not p.ended:
            gated = p.txn.gate(self._gather.wait(p), p.running, p.outcomes.put, self._txn.exclusive)
            if gated is None:
                continue
            batch = gated
            try:
                if batch:
                    self._ann.annotate(p, batch)
                now = self._now()  # after update_annotations, which may take a while
                started = self._rec.commit(p, batch, now)
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
            self._launcher.launch(p, started)

    def _now(self) -> datetime:
        return as_utc(self._clock())
