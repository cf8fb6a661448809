"""The limit slots of one engine pass (`tasker.store.limits`).

A step of a limited dependent system takes a slot before the fenced write that starts
it; one refused a slot is held (`planner.HELD_LIMIT`) and the write is planned again
without it. A slot is given back as soon as its attempt's outcome is in (before that
outcome's write, which may start the next step of the system), and a freed slot nudges
the tasks waiting for one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime, timedelta

from tasker.core.planner import HELD_LIMIT
from tasker.core.views import StepView
from tasker.store.limits import Limits, Want

log = logging.getLogger("tasker.engine")


class Slots:
    """The slots one pass holds, by step name, and the steps it held back.

    Args:
        limits: the database's limits.
        notify: sends a task's message (`Engine`'s notify).
        recheck: seconds after which a held step is looked at again though no freed
            slot nudged its task (a slot whose holder died expires with its lease).
    """

    def __init__(
        self, limits: Limits, notify: Callable[[int, datetime], None], recheck: float
    ) -> None:
        self._limits = limits
        self._notify = notify
        self._recheck = timedelta(seconds=recheck)
        self.held: dict[str, int] = {}  # step name -> workflow_step_id
        self.waited: set[str] = set()  # steps held back by a limit (this pass or before)
        self.replan = False  # the last `take` found a step that had waited in a past pass

    def take(
        self,
        task_id: int,
        views: Mapping[str, StepView],
        starting: Iterable[str],
        now: datetime,
        until: datetime,
    ) -> dict[str, tuple[str, datetime | None]]:
        """Take the slots the steps a write would start need.

        Returns:
            The steps refused one (`writes.Held`): plan the write again without them.
            A step granted one after waiting for it in an earlier pass joins `waited`
            (then too the write is planned again, for its history entry).
        """
        self.replan = False
        known = self._limits.known()
        if not known:
            return {}
        wants = [
            Want(n, views[n].workflow_step_id, views[n].dependent_system)
            for n in starting
            if views[n].dependent_system in known and n not in self.held
        ]
        if not wants:
            return {}
        granted, refused, waited = self._limits.take(task_id, wants, now, until)
        out: dict[str, tuple[str, datetime | None]] = {}
        for want in wants:
            if want.workflow_step_id in granted:
                self.held[want.name] = want.workflow_step_id
                if want.workflow_step_id in waited and want.name not in self.waited:
                    self.waited.add(want.name)
                    self.replan = True
                continue
            self.waited.add(want.name)
            again = now + self._recheck
            at = refused.get(want.workflow_step_id)
            out[want.name] = (HELD_LIMIT, again if at is None else min(at, again))
        return out

    def release(self, task_id: int, names: Iterable[str], now: datetime) -> None:
        """Give back the slots of these steps, and nudge the tasks waiting for one."""
        ids = [self.held.pop(n) for n in list(names) if n in self.held]
        if not ids:
            return
        try:
            nudged = self._limits.release(task_id, ids, now)
        except Exception:  # the slots expire with the lease; waiters recheck by then
            log.warning("task %s: releasing limit slots failed", task_id, exc_info=True)
            return
        for other in nudged:
            self._notify(other, now)

    def keep_only(self, task_id: int, running: Collection[str], now: datetime) -> None:
        """Give back the slots of steps that are not running (planned, then not started)."""
        self.release(task_id, [n for n in self.held if n not in running], now)

    def renew(self, until: datetime) -> None:
        """Extend the slots of the running steps along with the lease."""
        if not self.held:
            return
        try:
            self._limits.renew(list(self.held.values()), until)
        except Exception:  # the next renewal tries again; a lost slot only admits one more
            log.warning("renewing limit slots failed", exc_info=True)
