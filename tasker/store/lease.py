"""Leases, and the lease-fenced writes the engine makes while it holds one.

A lease is (owner, epoch, expiry) on the task row. Claiming bumps the epoch. The
engine then decides in memory what a write changes (steps' new states, their
transitions, annotations, the task's next state) and hands it to its store
(`tasker.store.base`) as a `TaskWrite`. The write first updates the task row, only while
the epoch and owner are still ours and the steering revision is the one the engine
planned with; the rest of the write happens only if that matched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tasker.core.states import Status
from tasker.core.views import StepView
from tasker.errors import LeaseLostError, StaleRevisionError
from tasker.store.audit import StepChange, step_change_rows, task_change_row

if TYPE_CHECKING:
    from tasker.store.base import NewTask

_IN_PROGRESS = Status.IN_PROGRESS.value
_COMPLETED = (Status.COMPLETE, Status.CANCELLED)  # final statuses an engine write sets
_ENDED = (Status.COMPLETE, Status.CANCELLED, Status.ERROR)  # endings that owe `on_finish`


@dataclass(frozen=True)
class Lease:
    """Proof that this process owns a task until the epoch moves on."""

    task_id: int
    owner: str
    epoch: int


@dataclass(frozen=True)
class Claimed:
    """A claimed task: its lease, its row, and its step rows (`steps.STEP_COLUMNS`) in order."""

    lease: Lease
    task: dict[str, Any]
    steps: list[Any]


@dataclass(frozen=True)
class Finish:
    """How a write ends the pass: to `to_status`, or (None) releasing the task.

    `to_status` is complete, error, paused or cancelled.

    A released task stays live and is due again at `wake_at` (announced by an outbox row).
    `error` is why the task itself ends in `error` (a timeout; `TaskView.error`).
    """

    to_status: Status | None
    wake_at: datetime | None
    reason: str
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class TaskWrite:
    """One lease-fenced transaction, decided by the engine before it is written."""

    lease: Lease
    revision: int  # the steering revision the engine planned with
    now: datetime
    lease_until: datetime
    steps: Sequence[StepView] = ()  # the new state of every step this write changes
    step_changes: Sequence[StepChange] = ()
    annotations: Sequence[tuple[int, Any]] = ()  # (annotation_type_id, annotation)
    finish: Finish | None = None
    # The handler has `on_finish`: an ending owes a call, which the writer runs once this
    # commits; it is due to the sweeper a lease period later (`lease_until`), in case
    # the writer dies first.
    callback: bool = False
    # (event_id, workflow_step_id): events consumed by the steps this write starts.
    consumed: Sequence[tuple[int, int]] = ()
    # Side effects of the write, stored only if its fence matched, in its transaction:
    spawned: Sequence[NewTask] = ()  # children its outcomes spawned (ids handed out ahead)
    nudge: int | None = None  # a parent task to wake (an outbox row for it): this one ended

    def task_values(self) -> dict[str, Any]:
        """The task row's new lease and scheduling values (see `Finish`)."""
        f = self.finish
        if f is None:
            return {
                "status": _IN_PROGRESS,
                "new_owner": self.lease.owner,
                "expires": self.lease_until,
                "set_next": False,
                "next_run_at": None,
                "completed_at": None,
                "error": None,
                "finish_due_at": None,
            }
        done = f.to_status is not None
        return {
            "status": f.to_status.value if f.to_status is not None else _IN_PROGRESS,
            "new_owner": None,
            "expires": None,
            "set_next": True,
            "next_run_at": None if done else f.wake_at,
            "completed_at": self.now if f.to_status in _COMPLETED else None,
            "error": f.error,
            "finish_due_at": self.lease_until if self.owes_callback() else None,
        }

    def owes_callback(self) -> bool:
        """Whether this write ends the task and owes an `on_finish` call."""
        f = self.finish
        return self.callback and f is not None and f.to_status in _ENDED

    def deliver_at(self) -> datetime | None:
        """When the message announcing a released task is due (its outbox row), else None."""
        f = self.finish
        return f.wake_at if f is not None and f.to_status is None else None


#: The task fields a claim reads: what the engine and the handlers' `task` need.
CLAIM_FIELDS = (
    "task_id",
    "named_task_id",
    "context",
    "tags",
    "initiator",
    "source_system",
    "reason",
    "requested_at",
    "created_at",
    "deadline_at",
    "revision",
    "tx_seq",
    "lease_epoch",
    "parent_task_id",
    "parent_waits",
    "next_run_at",  # when it was due: how long it waited (`Observer.on_pass_started`)
    "trace_context",  # the trace its passes continue (`tasker.engine.tracing`)
)


def audit_rows(w: TaskWrite) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The transition rows of a write (steps', and the task's if it finishes it).

    Raises:
        InvalidTransitionError: a change the state machine does not allow (a bug).
    """
    step_rows = step_change_rows(w.lease.task_id, w.step_changes, w.now)
    task_row = None
    if w.finish is not None and w.finish.to_status is not None:
        task_row = task_change_row(
            w.lease.task_id, Status.IN_PROGRESS, w.finish.to_status, w.finish.reason, w.now
        )
    return step_rows, task_row


def refusal(w: TaskWrite, current: Mapping[str, Any] | None) -> Exception:
    """Why a write's fence did not match, given the task's lease as the write saw it.

    A write whose lease still looks like ours was refused for its revision (a steering
    call), or raced one: either way the steps are read again and the write planned
    again, and a lease really lost is found then.
    """
    lease = w.lease
    if current is not None and (
        current["lease_epoch"] == lease.epoch
        and current["lease_owner"] == lease.owner
        and current["status"] == _IN_PROGRESS
    ):
        return StaleRevisionError(f"task {lease.task_id}: changed by a steering call")
    return LeaseLostError(f"task {lease.task_id}: lease epoch {lease.epoch} is no longer ours")
