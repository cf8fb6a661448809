"""Gathering what a pass waits for: its attempts' outcomes, time limits, a retry's due time."""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Callable
from datetime import datetime

from tasker.engine.outcome import Outcome
from tasker.engine.pass_state import Pass
from tasker.engine.transactional import StepTransactions
from tasker.settings import Settings

#: How long an outcome waits for the siblings launched with it, in seconds. Steps started
#: together often end together (a fan-out of quick steps): their outcomes then land in
#: one write, not one each, which saves a statement and its commit per sibling; a step
#: whose siblings run on waits at most this once per launch.
SIBLING_WAIT = 0.001


class Gatherer:
    """Waits for the outcomes of a pass's attempts (thread-safe: no state of its own)."""

    def __init__(
        self, settings: Settings, txn: StepTransactions, now: Callable[[], datetime]
    ) -> None:
        self._settings = settings
        self._txn = txn
        self._now = now

    def wait(self, p: Pass, at_most: float | None = None) -> list[Outcome]:
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
        if arrived:
            _siblings(p, arrived, min(clock + timeout, time.monotonic() + SIBLING_WAIT))
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
                batch.append(Outcome.after_time_limit(name, r.token, self.time_limit(p, name)))
        return batch

    def time_limit(self, p: Pass, name: str) -> float:
        """The time limit of one attempt of step `name`, in seconds."""
        tpl = p.reg.steps.get(name)
        if tpl is not None and tpl.for_each is not None:
            return math.inf  # the step's `timeout` bounds each item (`tasker.engine.items`)
        limit = (tpl.timeout if tpl is not None else None) or self._settings.step_timeout
        return self._txn.time_limit(limit) if tpl is not None and tpl.transactional else limit


def _siblings(p: Pass, arrived: list[Outcome], until: float) -> None:
    """Add to `arrived` the outcomes of the attempts launched with them, until `until`."""
    launches = {r.launch for o in arrived if (r := p.running.get(o.name)) is not None}
    names = {o.name for o in arrived}
    left = {
        n
        for n, r in p.running.items()
        if r.launch in launches and n not in names and not r.abandoned
    }
    while left:
        wait = until - time.monotonic()
        if wait <= 0:
            return
        try:
            o = p.outcomes.get(timeout=wait)
        except queue.Empty:
            return
        arrived.append(o)
        left.discard(o.name)
