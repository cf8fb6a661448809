"""What the unit tests of the engine's decisions (tasker.core.writes.decide) build on."""

from __future__ import annotations

import zlib
from datetime import datetime, timezone
from typing import Any

from tasker.core.flow import Attempt
from tasker.core.states import Status
from tasker.core.views import StepView
from tasker.core.writes import Rules

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
RULES = Rules(backoff_base=1, backoff_max=300, max_concurrent_steps=8)

#: One attempt's outcome as `decide` reads it: the core's own plain-values outcome.
Ended = Attempt


def step(
    name: str,
    status: Status | str = Status.PENDING,
    deps: tuple[str, ...] = (),
    attempts: int = 0,
    retry_limit: int = 3,
    next_at: datetime | None = None,
    retryable: bool = True,
    sid: int | None = None,
    **more: Any,
) -> StepView:
    """A step's view; its id is `sid`, else one derived from its name (the same every run).

    `more` sets any other `StepView` field (`processed_at`, `wait_for`, ...).
    """
    return StepView(
        workflow_step_id=zlib.crc32(name.encode()) % 1000 if sid is None else sid,
        name=name,
        status=Status(status).value,
        attempts=attempts,
        retry_limit=retry_limit,
        retryable=retryable,
        skippable=False,
        depends_on=deps,
        dependent_system="default",
        inputs=None,
        results=None,
        error=None,
        last_attempted_at=None,
        next_attempt_at=next_at,
        **more,
    )


def running(name: str, deps: tuple[str, ...] = (), attempts: int = 1, **kw: Any) -> StepView:
    """A step in progress, its attempt counted at launch."""
    return step(name, Status.IN_PROGRESS, deps, attempts=attempts, **kw)


def views(*steps: StepView) -> dict[str, StepView]:
    """The views by step name, as `decide` takes them."""
    return {s.name: s for s in steps}
