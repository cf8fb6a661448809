"""Limits per dependent system, held in the database across every worker.

`Tasker.limit(system, concurrency=, per_second=)` stores a row of `tasker_limits`. A step
of a limited system takes a slot (a row of `tasker_limit_holds`) before the fenced write
that starts it; the slot lasts until its outcome is recorded, or until its worker's lease
expires (a killed worker's slots come back by themselves). A step refused a slot is left
`pending` with no attempt used, noted in `tasker_limit_waits` (`waiting_for="limit"`), and
a freed slot nudges the tasks noted there: no clock needs to move.

Each take and release is one short transaction that first locks the system's limit row
(`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's single writer serialises them anyway),
so two workers never both take the last slot and a release never misses a waiter noted
at the same moment.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasker.core.clock import as_utc
from tasker.core.states import TASK_LIVE
from tasker.errors import ConfigurationError
from tasker.store import schema as m
from tasker.store.db import Database

L, H, W, T = m.limits, m.limit_holds, m.limit_waits, m.tasks
_SECOND = timedelta(seconds=1)
_LIVE = [s.value for s in TASK_LIVE]
#: How long a process trusts its copy of the limits before reading them again (seconds).
REFRESH = 1.0


@dataclass(frozen=True)
class Limit:
    """One dependent system's limit (None: no bound of that kind)."""

    concurrency: int | None
    per_second: int | None


@dataclass(frozen=True)
class Want:
    """A step about to start that needs a slot of its dependent system's limit."""

    name: str
    workflow_step_id: int
    system: str


def check_limit(system: object, concurrency: object, per_second: object) -> Limit:
    """The limit asked for, checked.

    Raises:
        ConfigurationError: an empty system name, or a bound that is not an integer of
            at least 1.
    """
    if not isinstance(system, str) or not system or len(system) > 128:
        raise ConfigurationError(f"a dependent system is a name of 1 to 128 characters: {system!r}")
    for field, value in (("concurrency", concurrency), ("per_second", per_second)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigurationError(
                f"limit {system!r}: {field} must be an integer of at least 1 (or None), "
                f"got {value!r}"
            )
    return Limit(concurrency, per_second)  # type: ignore[arg-type]


class Limits:
    """The limits of one database, as one process sees them (read again every `REFRESH` s)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._known: dict[str, Limit] = {}
        self._read_at = -math.inf

    def store(self, system: str, limit: Limit, now: datetime) -> None:
        """Set (or, with neither bound, lift) a system's limit, for every worker."""
        with self._db.write() as conn:
            conn.execute(sa.delete(L).where(L.c.name == system))
            if limit.concurrency is not None or limit.per_second is not None:
                conn.execute(
                    L.insert(),
                    {
                        "name": system,
                        "concurrency": limit.concurrency,
                        "per_second": limit.per_second,
                        "updated_at": now,
                    },
                )
        with self._lock:
            self._read_at = -math.inf

    def known(self) -> dict[str, Limit]:
        """Every limited system's limit (this process's copy, at most `REFRESH` s old)."""
        with self._lock:
            if time.monotonic() - self._read_at < REFRESH:
                return self._known
        with self._db.read() as conn:
            rows = conn.execute(sa.select(L.c.name, L.c.concurrency, L.c.per_second)).all()
        fresh = {r.name: Limit(r.concurrency, r.per_second) for r in rows}
        with self._lock:
            self._known, self._read_at = fresh, time.monotonic()
        return fresh

    def take(
        self, task_id: int, wants: Sequence[Want], now: datetime, until: datetime
    ) -> tuple[set[int], dict[int, datetime | None], set[int]]:
        """Take a slot for each step that wants one, as far as its system's limit allows.

        A step that already holds a live slot keeps it. A step refused one is noted as
        waiting for its limit (a freed slot nudges its task).

        Args:
            task_id: the steps' task.
            wants: the steps, in the order they would start.
            now: the app's clock (`per_second` counts starts by it).
            until: when the slots expire unless renewed (the lease's expiry).

        Returns:
            The step ids granted a slot; each refused step id with the earliest time a
            start may be allowed again (`per_second`), or None (`concurrency`: when a
            slot frees); and the ids of the steps that had been waiting for their limit.
        """
        waited: set[int] = set()
        granted: set[int] = set()
        refused: dict[int, datetime | None] = {}
        by_system: dict[str, list[Want]] = {}
        for want in wants:
            by_system.setdefault(want.system, []).append(want)
        with self._db.write() as conn:
            for system in sorted(by_system):  # one lock order: no deadlock between takers
                mine = by_system[system]
                limit = _lock(conn, system)
                if limit is None:  # lifted meanwhile
                    granted.update(w.workflow_step_id for w in mine)
                    continue
                g, r = _take(conn, task_id, system, limit, mine, now, until)
                granted |= g
                refused.update(r)
                waited |= _note_waits(conn, task_id, system, mine, r, now)
        return granted, refused, waited

    def release(self, task_id: int, step_ids: Sequence[int], now: datetime) -> list[int]:
        """Give back the slots of these steps; nudge the other tasks waiting for them.

        Returns:
            The live tasks nudged (made due now, with an outbox row): send their messages.
        """
        if not step_ids:
            return []
        with self._db.write() as conn:
            systems = sorted(
                set(
                    conn.execute(
                        sa.select(H.c.system).where(
                            H.c.workflow_step_id.in_(step_ids), H.c.released_at.is_(None)
                        )
                    ).scalars()
                )
            )
            for system in systems:
                _lock(conn, system)
            conn.execute(
                sa.update(H)
                .where(H.c.workflow_step_id.in_(step_ids), H.c.released_at.is_(None))
                .values(released_at=now)
            )
            if not systems:
                return []
            waiting = W.c.system.in_(systems) & (W.c.task_id != task_id)
            others = sorted(set(conn.execute(sa.select(W.c.task_id).where(waiting)).scalars()))
            if not others:
                return []
            conn.execute(sa.delete(W).where(waiting))
            nudged = [
                int(i)
                for i in conn.execute(
                    sa.update(T)
                    .where(T.c.task_id.in_(others), T.c.status.in_(_LIVE))
                    .values(next_run_at=now, revision=T.c.revision + 1, updated_at=now)
                    .returning(T.c.task_id)
                ).scalars()
            ]
            if nudged:
                conn.execute(
                    m.outbox.insert(),
                    [{"task_id": t, "deliver_at": now, "created_at": now} for t in nudged],
                )
        return nudged

    def renew(self, step_ids: Sequence[int], until: datetime) -> None:
        """Extend the slots of steps still running to `until` (the renewed lease's expiry)."""
        if not step_ids:
            return
        with self._db.write() as conn:
            conn.execute(
                sa.update(H)
                .where(H.c.workflow_step_id.in_(step_ids), H.c.released_at.is_(None))
                .values(expires_at=until)
            )


def waiting_steps(conn: Connection, task_ids: Sequence[int]) -> set[int]:
    """The ids of these tasks' steps held back by a limit."""
    if not task_ids:
        return set()
    rows = conn.execute(sa.select(W.c.workflow_step_id).where(W.c.task_id.in_(task_ids)))
    return {int(i) for i in rows.scalars()}


def _lock(conn: Connection, system: str) -> Limit | None:
    """Lock a system's limit row for this transaction and read it (None: not limited)."""
    row = conn.execute(
        sa.select(L.c.concurrency, L.c.per_second).where(L.c.name == system).with_for_update()
    ).first()
    return None if row is None else Limit(row.concurrency, row.per_second)


def _take(
    conn: Connection,
    task_id: int,
    system: str,
    limit: Limit,
    wants: Sequence[Want],
    now: datetime,
    until: datetime,
) -> tuple[set[int], dict[int, datetime | None]]:
    """Take the slots one system's limit allows, its limit row locked by this transaction."""
    live = set(
        conn.execute(
            sa.select(H.c.workflow_step_id).where(
                H.c.system == system, H.c.released_at.is_(None), H.c.expires_at > now
            )
        ).scalars()
    )
    recent = sorted(
        as_utc(t)
        for t in conn.execute(
            sa.select(H.c.started_at).where(H.c.system == system, H.c.started_at > now - _SECOND)
        ).scalars()
    )
    granted: set[int] = set()
    refused: dict[int, datetime | None] = {}
    taking = []
    for want in wants:
        sid = want.workflow_step_id
        if sid in live:  # it holds one already (a write planned again)
            granted.add(sid)
            continue
        if limit.concurrency is not None and len(live) >= limit.concurrency:
            refused[sid] = None
            continue
        if limit.per_second is not None and len(recent) >= limit.per_second:
            refused[sid] = recent[len(recent) - limit.per_second] + _SECOND
            continue
        live.add(sid)
        recent.append(now)
        granted.add(sid)
        taking.append(sid)
    # Released slots are kept a second, for `per_second`; older ones go now.
    conn.execute(
        sa.delete(H).where(
            H.c.system == system, H.c.released_at.is_not(None), H.c.started_at <= now - _SECOND
        )
    )
    if taking:
        conn.execute(sa.delete(H).where(H.c.workflow_step_id.in_(taking)))
        conn.execute(
            H.insert(),
            [
                {
                    "workflow_step_id": sid,
                    "task_id": task_id,
                    "system": system,
                    "started_at": now,
                    "expires_at": until,
                }
                for sid in taking
            ],
        )
    return granted, refused


def _note_waits(
    conn: Connection,
    task_id: int,
    system: str,
    wants: Sequence[Want],
    refused: dict[int, datetime | None],
    now: datetime,
) -> set[int]:
    """Note the refused steps as waiting for the limit, and forget the granted ones.

    Returns:
        The ids of the steps that were noted as waiting before.
    """
    ids = [w.workflow_step_id for w in wants]
    before = {
        int(i)
        for i in conn.execute(
            sa.select(W.c.workflow_step_id).where(W.c.workflow_step_id.in_(ids))
        ).scalars()
    }
    conn.execute(sa.delete(W).where(W.c.workflow_step_id.in_(ids)))
    waiting = [sid for sid in ids if sid in refused]
    if waiting:
        conn.execute(
            W.insert(),
            [
                {"workflow_step_id": sid, "task_id": task_id, "system": system, "created_at": now}
                for sid in waiting
            ],
        )
    return before
