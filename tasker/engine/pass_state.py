"""What one engine pass knows about its task, and what its running attempts are."""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tasker.core.events import Event
from tasker.core.spawns import Children
from tasker.core.views import StepView
from tasker.definition.registry import RegisteredTask
from tasker.engine.attempt_tx import Held
from tasker.engine.outcome import Outcome
from tasker.engine.runtime import StepSequence
from tasker.engine.slots import Slots
from tasker.engine.transactional import PassTransactions
from tasker.store import lease as leases


@dataclass
class Running:
    """One attempt of the pass that runs on a thread of this process."""

    token: object
    deadline: float  # time.monotonic()
    # Timed out and recorded as failed, but its thread still runs (Python cannot kill
    # it): the step is not started again, here or elsewhere, until the thread ends.
    abandoned: bool = False
    held: Held | None = None  # a transactional step's open transaction
    launch: int = 0  # which launch of the pass started it (siblings share one)


@dataclass
class Pass:
    """Everything one engine pass knows about its task."""

    lease: leases.Lease
    reg: RegisteredTask
    row: dict[str, Any]
    revision: int
    tx_seq: int  # the task's transaction number after our last write
    views: dict[str, StepView]
    running: dict[str, Running] = field(default_factory=dict)
    launches: int = 0  # launches with steps so far
    outcomes: queue.SimpleQueue[Outcome] = field(default_factory=queue.SimpleQueue)
    notify_at: datetime | None = None  # a message to send once the transaction commits
    wake_at: datetime | None = None  # the app-clock time a waiting retry becomes due
    annotations: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # time.monotonic() until which the lease is surely ours with a margin (see _keep).
    safe_until: float = 0.0
    # A step asked to pause or cancel the task ("pause"/"cancel", the reason): no step
    # starts; a pause ends the pass once the running steps are recorded (`writes.decide`).
    asked: tuple[str, str] | None = None
    ended: bool = False  # a write ended the pass (finished or released the task)
    idle: bool = False  # ... and it released the task idle until nudged
    owed: datetime | None = None  # an ending owes `on_finish`: its `finish_due_at`
    txn: PassTransactions = field(default_factory=PassTransactions)  # transactional steps
    # The events the last write's started steps run with, by step name.
    started_events: dict[str, Event] = field(default_factory=dict)
    # The task's events (`tasker.core.events`), read when a step waits for one.
    events: list[Event] = field(default_factory=list)
    # The limit slots its running steps hold (`tasker.engine.slots`).
    slots: Slots | None = None
    # What the awaited children of steps awaiting them are, by step name.
    children: dict[str, Children] = field(default_factory=dict)
    sends: list[int] = field(default_factory=list)  # tasks to message after the commit

    def sequence(self) -> StepSequence:
        """The task's steps as its handlers see them (`StepSequence`)."""
        return StepSequence(self.views.get, tuple(self.views))

    def snapshot(self) -> Snapshot:
        """What a write planned from this state changes, to `restore` if it is refused."""
        return (
            dict(self.views),
            dict(self.running),
            self.revision,
            list(self.annotations),
            self.asked,
            list(self.events),
        )

    def restore(self, saved: Snapshot) -> None:
        """Go back to a `snapshot` (a write was refused: nothing of it landed)."""
        views, running, self.revision, annotations, self.asked, events = saved
        self.views, self.running, self.annotations = dict(views), dict(running), list(annotations)
        self.events = list(events)
        self.notify_at = None


Snapshot = tuple[
    dict[str, StepView],
    dict[str, "Running"],
    int,
    list[tuple[int, dict[str, Any]]],
    tuple[str, str] | None,
    list[Event],
]


def waits_for_events(views: dict[str, StepView]) -> bool:
    """Whether a step of the task waits for an event (`StepTemplate.wait_for`)."""
    return any(v.wait_for is not None for v in views.values())
