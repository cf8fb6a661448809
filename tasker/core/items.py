"""Collections (`for_each`), decided with no I/O: items' states, what runs, how it ends.

A `for_each` step's item runner (`tasker.engine.items`) keeps every item's `Item` and
asks these functions what to write. An item attempt is counted when it starts
(`start`); its outcome (`record`) completes it, or fails it with a backoff while the
step's retry rules leave it an attempt, else for good. The step completes once every
item has; it fails for good once an item has no attempt left and none other runs or
is due; else it waits ("items") until the next item's backoff ends (`verdict`).
An item's handler may ask for flow control (`requested`): `step.reattempt` and
`step.skip` act on that item, `task.pause` and `task.cancel` on the task (the runner
starts no more items and ends the step's run with that request).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from tasker.core import flow
from tasker.core.backoff import backoff_seconds
from tasker.core.jsonvalue import json_problem
from tasker.core.states import AWAIT_ITEMS, Status
from tasker.core.views import StepView
from tasker.errors import ItemError

PENDING, IN_PROGRESS = Status.PENDING.value, Status.IN_PROGRESS.value
COMPLETE, ERROR = Status.COMPLETE.value, Status.ERROR.value
#: The flow kind of an item runner's outcome that leaves its step awaiting items.
AWAIT = AWAIT_ITEMS
#: The error recorded for an item left running by a worker that was lost.
ITEM_LOST = {
    "message": "worker lost: the item was running when its worker's lease expired",
    "error_class": "tasker.errors.WorkerLostError",
    "backtrace": "",
}


@dataclass(frozen=True)
class Item:
    """One item of a `for_each` step, as stored (without its value)."""

    index: int
    status: str = PENDING
    attempts: int = 0
    error: dict[str, Any] | None = None
    next_attempt_at: datetime | None = None

    @property
    def failed_for_good(self) -> bool:
        """Failed with no attempt left."""
        return self.status == ERROR and self.next_attempt_at is None


@dataclass(frozen=True)
class Rules:
    """The step's retry rules, applied to each item, and the app's backoff."""

    retry_limit: int
    retryable: bool
    backoff_base: float
    backoff_max: float


def check_list(value: Any) -> str | None:
    """Why a `for_each` return value cannot be stored as the item list, or None."""
    if not isinstance(value, list):
        return f"for_each must return a list of JSON values, got a {type(value).__name__}"
    problem = json_problem(value)
    return None if problem is None else f"for_each returned items that are not JSON: {problem}"


def lost(items: Iterable[Item], rules: Rules, now: datetime) -> list[Item]:
    """The items a previous runner left running: each a failed attempt ("worker lost")."""
    return [
        record(i, False, dict(ITEM_LOST), None, False, rules, now)
        for i in items
        if i.status == IN_PROGRESS
    ]


class Agenda:
    """Which items start next: retries as they fall due, then pending items in order.

    Built once from the stored items; the runner hands back each item whose attempt
    ended (`put`). Each pick costs O(log n), not a scan of every item.
    """

    def __init__(self, items: Iterable[Item]) -> None:
        self._pending: deque[int] = deque()
        self._retries: list[tuple[datetime, int]] = []
        for i in sorted(items, key=lambda i: i.index):
            self.put(i)

    def put(self, item: Item) -> None:
        """Schedule a pending item (due later if reattempted), or a failed one to retry."""
        if item.status == PENDING and item.next_attempt_at is None:
            self._pending.append(item.index)
        elif item.status in (PENDING, ERROR) and item.next_attempt_at is not None:
            heapq.heappush(self._retries, (item.next_attempt_at, item.index))

    def take(self, now: datetime, room: int) -> list[int]:
        """Up to `room` items to start now."""
        out: list[int] = []
        while len(out) < room and self._retries and self._retries[0][0] <= now:
            out.append(heapq.heappop(self._retries)[1])
        while len(out) < room and self._pending:
            out.append(self._pending.popleft())
        return out

    def next_due(self) -> datetime | None:
        """When the next retry falls due (None: no retry is waiting)."""
        return self._retries[0][0] if self._retries else None


def start(item: Item) -> Item:
    """The item as its attempt starts (the attempt is counted now)."""
    return replace(item, status=IN_PROGRESS, attempts=item.attempts + 1, next_attempt_at=None)


def record(
    item: Item,
    ok: bool,
    error: dict[str, Any] | None,
    retry_after: float | None,
    permanent: bool,
    rules: Rules,
    now: datetime,
) -> Item:
    """The item after its attempt (counted in `attempts`) ended."""
    if ok:
        return replace(item, status=COMPLETE, error=None, next_attempt_at=None)
    limit = rules.retry_limit if rules.retryable else 1
    if permanent or item.attempts >= limit:
        return replace(item, status=ERROR, error=error, next_attempt_at=None)
    delay = backoff_seconds(item.attempts, rules.backoff_base, rules.backoff_max, retry_after)
    return replace(item, status=ERROR, error=error, next_attempt_at=now + timedelta(seconds=delay))


def requested(item: Item, kind: str, wait: float | None, now: datetime) -> Item:
    """The item after its handler asked for flow control (not a failed attempt).

    `step.reattempt(wait)`: the item runs again after `wait`; `step.skip()`: the item
    is done with no results; `task.pause()`/`task.cancel()`: the item is not done and
    runs again if the step does (the runner starts no more items). The attempt it
    used is not counted.
    """
    back = max(item.attempts - 1, 0)
    if kind == flow.REATTEMPT:
        due = now + timedelta(seconds=wait or 0.0)
        return replace(item, status=PENDING, attempts=back, next_attempt_at=due)
    if kind == flow.SKIP:
        return replace(item, status=COMPLETE, attempts=back, error=None, next_attempt_at=None)
    return replace(item, status=PENDING, attempts=back, next_attempt_at=None)


@dataclass(frozen=True)
class Verdict:
    """How the item runner ends (once nothing runs and nothing is due now).

    `kind`: "complete" (every item complete), "failed" (an item has no attempt left:
    `error` says which), or "await" (items wait for their backoff until `wake_at`).
    """

    kind: str
    error: dict[str, Any] | None = None
    wake_at: datetime | None = None


def verdict(items: Mapping[int, Item]) -> Verdict:
    """How the step ends, when no item runs and none is due now."""
    later = [i.next_attempt_at for i in items.values() if i.next_attempt_at is not None]
    if later:
        return Verdict("await", wake_at=min(later))
    failed = [i for i in items.values() if i.failed_for_good]
    if not failed:
        return Verdict("complete")
    first = failed[0]
    cause = (first.error or {}).get("message", "")
    message = (
        f"{len(failed)} item(s) failed with no attempt left (first: item {first.index}: {cause})"
    )
    error = {**flow.error_of(ItemError, message), "items": [i.index for i in failed[:100]]}
    return Verdict("failed", error=error)


def await_items(v: StepView, wake_at: datetime) -> StepView:
    """The step while its items wait for their backoff: no thread, due at `wake_at`."""
    return replace(v, status=IN_PROGRESS, awaiting=AWAIT_ITEMS, next_attempt_at=wake_at)


def counts(statuses: Mapping[str, int]) -> dict[str, int]:
    """`StepView.items` from the number of items in each status."""
    complete = statuses.get(COMPLETE, 0)
    error = statuses.get(ERROR, 0)
    pending = statuses.get(PENDING, 0) + statuses.get(IN_PROGRESS, 0)
    return {
        "total": complete + error + pending,
        "complete": complete,
        "error": error,
        "pending": pending,
    }
