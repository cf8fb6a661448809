"""Recording outcomes: one lease-fenced write per batch, which also starts what they made ready.

The write is planned by `tasker.core.writes.decide` from what the pass knows; limit
slots are taken for the steps it starts, and a write refused by a steering call is
planned again from a fresh read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from tasker.core import spawns, writes
from tasker.core.clock import as_utc, maybe_utc
from tasker.core.states import Status
from tasker.core.views import StepView
from tasker.engine.observer import Observers
from tasker.engine.outcome import Outcome
from tasker.engine.pass_io import PassIO
from tasker.engine.pass_state import Pass
from tasker.engine.spawning import claims_taken, refused_children
from tasker.engine.transactional import TransactionLost, lost
from tasker.errors import StaleRevisionError
from tasker.settings import Settings
from tasker.store import lease as leases


def _refused(batch: list[Outcome], w: leases.TaskWrite, exc: IntegrityError) -> list[Outcome]:
    """The batch again, its attempts whose children's key or subject was taken failed.

    Raises:
        IntegrityError: `exc`, when no child of the write took a key or a subject.
    """
    refused = [refused_children(o, exc) for o in batch]
    same = all(r is o for r, o in zip(refused, batch, strict=True))
    if not w.spawned or not claims_taken(exc) or same:
        raise exc
    return refused


class Recorder:
    """Records the outcomes of an engine pass (thread-safe: no state of its own)."""

    def __init__(
        self,
        io: PassIO,
        settings: Settings,
        observer: Observers,
        stopping: threading.Event,
    ) -> None:
        self._io = io
        self._settings = settings
        self._observer = observer
        self._stopping = stopping
        self._rules = writes.Rules(
            settings.backoff_base, settings.backoff_max, settings.max_concurrent_steps
        )

    def commit(
        self,
        p: Pass,
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
                # The steps that awaited children when this write was planned: one it
                # just settled must be settled again by the write planned next (a step
                # that only now awaits has children this write inserts: none ended).
                p.children = self._io.children(p, p.views)
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
                    self._io.apply(p, w, time.monotonic())
                else:
                    complete = d.steps[txo.name].status == Status.COMPLETE.value
                    self._io.apply_held(p, w, txo, complete)
            except StaleRevisionError:
                p.restore(before)
                self._io.reload(p)
                before = p.snapshot()
                continue
            except IntegrityError as exc:
                # A key or subject of a child was taken meanwhile: nothing landed, and
                # the attempts that spawned such children are recorded as failed.
                batch = _refused(batch, w, exc)
                p.restore(before)
                continue
            except TransactionLost as exc:
                # Nothing landed, the step's writes with it: record the attempt as failed.
                p.restore(before)
                p.txn.via = None
                batch = [lost(o, exc) if o is txo else o for o in batch]
                continue
            self._landed(p, d, w, nudge)
            return [p.views[n] for n in d.started]

    def _landed(self, p: Pass, d: writes.Write, w: leases.TaskWrite, nudge: int | None) -> None:
        """Bring the pass up to date with a write that landed."""
        slots = p.slots
        assert slots is not None
        p.views.update(d.steps)
        p.annotations, p.wake_at, p.notify_at = [], d.wake_at, d.notify_at
        p.asked, p.ended = d.asked, d.finish is not None
        p.idle = d.idle
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

    @staticmethod
    def _track(p: Pass, outcomes: list[Outcome]) -> None:
        """Take the attempts that ended off `p.running`.

        One past its time limit is abandoned instead: its thread runs on, and its step
        is not started again meanwhile.
        """
        for o in outcomes:
            if o.timed_out:  # a new object: a snapshot taken before keeps the old one
                p.running[o.name] = replace(p.running[o.name], abandoned=True)
            else:
                p.running.pop(o.name, None)
