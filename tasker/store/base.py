"""The narrow interface of the hot writes: enqueue, claim and the lease-fenced write.

The engine and `enqueue` decide what to write; a store writes it. Two stores,
one per database: on PostgreSQL each of these is a single statement sent on a
raw driver connection (`tasker.store.postgres`); on SQLite a few SQLAlchemy Core
statements in one `BEGIN IMMEDIATE` transaction (`tasker.store.sqlite`). Both raise
SQLAlchemy's exceptions (`DBAPIError` and its kinds), so callers handle errors once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.engine import Connection

from tasker.store.db import Database
from tasker.store.lease import Claimed, TaskWrite


@dataclass(frozen=True)
class NewTask:
    """A task to insert, as `enqueue` decided it.

    Attributes:
        values: the task's columns (`named_task_id`, `context`, ..., `requested_at`).
        steps: each step's first state in position order (`named_step_id`, `position`,
            `status`, `retryable`, `retry_limit`, `skippable`, `processed_at`) and its
            transition's `reason`.
        edges: (parent, child) positions.

    A spawned child's `values` also hold its id, handed out ahead (`task_id`), and
    `parent_task_id`, `parent_step_id`, `spawn_key` and `parent_waits`
    (`NEW_TASK_DEFAULTS` for any other task).
    """

    values: dict[str, Any]
    steps: Sequence[dict[str, Any]]
    edges: Sequence[tuple[int, int]]


#: The task columns only a spawned child sets (see `NewTask`).
NEW_TASK_DEFAULTS: dict[str, Any] = {
    "task_id": None,
    "parent_task_id": None,
    "parent_step_id": None,
    "spawn_key": None,
    "parent_waits": None,
}


class Store(Protocol):
    """What the engine and `enqueue` need of the database for their hot writes."""

    def insert_tasks(
        self, tasks: Sequence[NewTask], now: datetime, caller: Connection | None = None
    ) -> list[tuple[int, list[int]]]:
        """Insert tasks with their steps, edges, transitions and outbox rows, all or none.

        On PostgreSQL one statement whatever the number of tasks; on SQLite one
        transaction of a few statements.

        Args:
            tasks: the tasks, in the order of the ids returned.
            now: the time of the change.
            caller: the caller's connection (`enqueue(connection=)`): the rows are written
                there, in its open transaction, and left uncommitted.

        Returns:
            Each task's id and its step ids in position order.

        Raises:
            sqlalchemy.exc.IntegrityError: a unique key (an idempotency key, a live
                subject) is taken, or another constraint broke; nothing was stored.
        """
        ...

    def claim(self, task_id: int, owner: str, now: datetime, expires: datetime) -> Claimed | None:
        """Take the lease of a task that is live, due and not leased by anyone alive.

        The messages that announced the task count as delivered (its outbox rows go);
        the first claim records the task's pending -> in_progress transition.

        Returns:
            The claim, or None when the task is finished, cancelled, not due yet or
            leased: the message is then a no-op.
        """
        ...

    def apply(self, w: TaskWrite, caller: Connection | None = None) -> int:
        """Write `w` if the lease and the steering revision are still as planned.

        Args:
            w: the write.
            caller: a connection in an open transaction (a transactional step's): the
                write is made there and left uncommitted (the caller commits it). Else
                it is its own short transaction.

        Returns:
            The number this write has in the task's order (`tx_seq`).

        Raises:
            LeaseLostError: the task was cancelled or finished, or another worker
                claimed it.
            StaleRevisionError: a steering call changed the task since it was read.
            InvalidTransitionError: a change the state machine does not allow (a bug).
        """
        ...


def make_store(db: Database) -> Store:
    """The store for `db`'s kind of database."""
    if db.is_postgres:
        from tasker.store.postgres import PgStore

        return PgStore(db)
    from tasker.store.sqlite import SqlStore

    return SqlStore(db)
