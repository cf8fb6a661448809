"""Durable schedules: a task enqueued at every cron time, or every interval.

A schedule is a row of `tasker_schedules`: its name, the request to enqueue, a cron
expression (parsed by `cronsim`, in the schedule's time zone) or an interval, and
`next_tick`, the next time it is due. Whoever sweeps (every worker's sweeper, and
`run_until_idle()` by the app's clock) fires the due ticks:

1. enqueue the request with the idempotency key `tasker.schedule:<name>:<tick>`, so two
   sweepers firing the same tick make one task (the second gets the first's);
2. move `next_tick` on with a conditional UPDATE (`WHERE next_tick = <tick>`), so the
   tick is consumed once. A crash between the two steps fires the tick again on the
   next sweep, and the key answers with the task already made.

A tick missed while no worker ran is fired once; `next_tick` then moves to the first
time after now, so the ticks missed in between are not piled up.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from cronsim import CronSim, CronSimError
from sqlalchemy.dialects import postgresql, sqlite

from tasker.control.enqueue import check_request
from tasker.core.clock import as_utc
from tasker.core.duration import to_seconds
from tasker.definition.registry import HandlerFactory
from tasker.definition.request import TaskRequest
from tasker.errors import IdempotencyConflictError, InvalidRequestError, UnknownTaskError
from tasker.store import schema as m
from tasker.store.db import Database

log = logging.getLogger("tasker.schedules")

SC = m.schedules
_NAME_LIMIT = 128
#: The request fields a schedule stores (the tick sets the key and `requested_at`).
_FIELDS = (
    "name",
    "context",
    "version",
    "initiator",
    "source_system",
    "reason",
    "tags",
    "bypass_steps",
    "subject",
)


@dataclass(frozen=True)
class ScheduleView:
    """A stored schedule.

    Attributes:
        name: its name (unique).
        request: what each tick enqueues.
        cron: the cron expression, or None for an interval schedule.
        every: the interval, or None for a cron schedule.
        timezone: the IANA time zone the cron expression is read in.
        next_tick: when it is next due (aware UTC).
    """

    name: str
    request: TaskRequest
    cron: str | None
    every: timedelta | None
    timezone: str
    next_tick: datetime


def tick_key(name: str, tick: datetime) -> str:
    """The idempotency key of the task of one tick of a schedule."""
    return f"tasker.schedule:{name}:{as_utc(tick).isoformat()}"


def _zone(name: Any) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise InvalidRequestError(f"timezone must be an IANA zone name, got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequestError(f"unknown timezone {name!r}") from None


def _next_cron(cron: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first time of `cron` (read in `zone`) strictly after `after`, in UTC."""
    try:
        tick: datetime = next(CronSim(cron, after.astimezone(zone)))
    except (CronSimError, StopIteration) as exc:
        raise InvalidRequestError(f"cron expression {cron!r} does not parse: {exc}") from None
    return tick.astimezone(timezone.utc)


def _next_tick(cron: str | None, every: float | None, zone: ZoneInfo, after: datetime) -> datetime:
    if cron is not None:
        return _next_cron(cron, zone, after)
    assert every is not None
    return after + timedelta(seconds=every)


def _following(row: Any, tick: datetime, now: datetime) -> datetime:
    """The first tick of a schedule after both `tick` and `now` (skipping missed ticks)."""
    if row.cron is not None:
        return _next_cron(row.cron, ZoneInfo(row.timezone), max(tick, now))
    every = timedelta(seconds=row.every_seconds)
    if tick + every > now:
        return tick + every
    # Keep the phase of the interval: the first tick + k * every after now.
    return tick + every * (math.floor((now - tick) / every) + 1)


def _check_timing(cron: Any, every: Any) -> tuple[str | None, float | None]:
    if (cron is None) == (every is None):
        raise InvalidRequestError("a schedule needs exactly one of cron= and every=")
    if cron is not None:
        if not isinstance(cron, str) or not cron.strip():
            raise InvalidRequestError(f"cron must be a cron expression string, got {cron!r}")
        return cron.strip(), None
    try:
        seconds = to_seconds(every)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"every: {exc}") from None
    if seconds <= 0:
        raise InvalidRequestError(f"every must be positive, got {every!r}")
    return None, seconds


def _check_request(factory: HandlerFactory, request: Any) -> dict[str, Any]:
    if not isinstance(request, TaskRequest):
        raise InvalidRequestError(f"a schedule takes a TaskRequest, got {type(request).__name__}")
    if request.idempotency_key is not None or request.requested_at is not None:
        raise InvalidRequestError(
            "a scheduled request sets neither idempotency_key nor requested_at: each tick "
            "makes its own from the schedule's name and the tick time"
        )
    check_request(factory.get(request.name, request.version), request)
    stored = {f: getattr(request, f) for f in _FIELDS}
    return {**stored, "tags": list(request.tags), "bypass_steps": list(request.bypass_steps)}


def _request(stored: dict[str, Any]) -> TaskRequest:
    lists = {"tags": tuple(stored["tags"]), "bypass_steps": tuple(stored["bypass_steps"])}
    return TaskRequest(**{**stored, **lists})


def _view(row: Any) -> ScheduleView:
    return ScheduleView(
        name=row.name,
        request=_request(row.request),
        cron=row.cron,
        every=None if row.every_seconds is None else timedelta(seconds=row.every_seconds),
        timezone=row.timezone,
        next_tick=as_utc(row.next_tick),
    )


def save(
    db: Database,
    factory: HandlerFactory,
    name: Any,
    request: Any,
    cron: Any,
    every: Any,
    timezone_name: Any,
    now: datetime,
) -> ScheduleView:
    """Store a schedule, or update the one of that name (see `Tasker.schedule`).

    An update that keeps the cron, interval and time zone keeps `next_tick` (an app
    that declares its schedules at every start does not postpone them); one that
    changes them counts the first tick from now.

    Raises:
        InvalidRequestError: a bad name, timing or time zone, or an invalid request
            (`UnknownTaskError`, `ContextValidationError`, ...); nothing is stored.
    """
    if not isinstance(name, str) or not name.strip() or len(name) > _NAME_LIMIT:
        raise InvalidRequestError(
            f"a schedule name is a non-empty string of at most {_NAME_LIMIT} characters"
        )
    stored = _check_request(factory, request)
    cron, every_seconds = _check_timing(cron, every)
    zone = _zone(timezone_name)
    first = _next_tick(cron, every_seconds, zone, now)
    values = {
        "name": name,
        "request": stored,
        "cron": cron,
        "every_seconds": every_seconds,
        "timezone": timezone_name,
        "next_tick": first,
        "created_at": now,
        "updated_at": now,
    }
    insert = (postgresql.insert if db.is_postgres else sqlite.insert)(SC).values(values)
    same_timing = sa.and_(
        SC.c.cron.is_not_distinct_from(insert.excluded.cron),
        SC.c.every_seconds.is_not_distinct_from(insert.excluded.every_seconds),
        SC.c.timezone == insert.excluded.timezone,
    )
    upsert = insert.on_conflict_do_update(
        index_elements=[SC.c.name],
        set_={
            "request": insert.excluded.request,
            "cron": insert.excluded.cron,
            "every_seconds": insert.excluded.every_seconds,
            "timezone": insert.excluded.timezone,
            "next_tick": sa.case((same_timing, SC.c.next_tick), else_=insert.excluded.next_tick),
            "updated_at": insert.excluded.updated_at,
        },
    ).returning(*SC.c)
    with db.write() as conn:
        row = conn.execute(upsert).one()
    return _view(row)


def remove(db: Database, name: str) -> bool:
    """Delete the schedule of that name; True if there was one."""
    with db.write() as conn:
        return bool(conn.execute(sa.delete(SC).where(SC.c.name == name)).rowcount)


def list_all(db: Database) -> list[ScheduleView]:
    """Every schedule, by name."""
    with db.read() as conn:
        return [_view(r) for r in conn.execute(sa.select(SC).order_by(SC.c.name))]


def fire_due(
    db: Database, now: datetime, enqueue: Callable[[TaskRequest], object], limit: int = 100
) -> int:
    """Enqueue one task for each schedule due by `now`, and move each schedule on.

    A schedule whose task is not registered in this process is left for a worker that
    knows it; a tick whose request is refused (the schema changed, the subject is
    taken) is logged and skipped.

    Returns:
        How many ticks this call consumed.
    """
    with db.read() as conn:
        due = conn.execute(
            sa.select(SC).where(SC.c.next_tick <= now).order_by(SC.c.next_tick).limit(limit)
        ).all()
    fired = 0
    for row in due:
        tick = as_utc(row.next_tick)
        request = replace(
            _request(row.request), idempotency_key=tick_key(row.name, tick), requested_at=tick
        )
        try:
            enqueue(request)
        except UnknownTaskError:
            log.warning("schedule %r: task %r is not registered here", row.name, request.name)
            continue
        except IdempotencyConflictError:
            pass  # the tick's task exists, made before the schedule's request changed
        except InvalidRequestError as exc:
            log.error("schedule %r: the tick of %s is skipped: %s", row.name, tick, exc)
        with db.write() as conn:
            moved = conn.execute(
                sa.update(SC)
                .where(SC.c.name == row.name, SC.c.next_tick == row.next_tick)
                .values(next_tick=_following(row, tick, now), updated_at=now)
            ).rowcount
        fired += moved
    return fired
