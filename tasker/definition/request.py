"""`TaskRequest`: what a service asks tasker to run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class TaskRequest:
    """A request to run a task.

    Attributes:
        name: the registered task name.
        context: the task's input, validated against the handler's `context_schema`.
        version: the handler version (default: the newest registered).
        initiator: who asked (a user, a service).
        source_system: the system the request comes from.
        reason: why.
        tags: free labels for reporting.
        bypass_steps: skippable steps to mark `skipped` at creation.
        requested_at: when it was asked (default: the app's clock at enqueue).
        idempotency_key: a second request with the same key and contents returns
            the first task instead of creating another.
        subject: what the task is about (e.g. "user:42"), or None; with
            `TaskHandler.one_per_subject`, one task of the name per subject is not final.
    """

    name: str
    context: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    initiator: str = "unknown"
    source_system: str = "unknown"
    reason: str = "unknown"
    tags: Sequence[str] = ()
    bypass_steps: Sequence[str] = ()
    requested_at: datetime | None = None
    idempotency_key: str | None = None
    subject: str | None = None
