"""A `for_each` step's items are written in batches, on SQLite and PostgreSQL: the
statements tasker sends per item stay bounded however long the list is.

Counted, not timed, as bench/compose.py counts them: every statement from the enqueue
to the task complete, through a SQLAlchemy `before_cursor_execute` hook (an
`executemany` counts once) plus the statements sent on the driver beside SQLAlchemy:
PostgreSQL's autocommit hot path (`Database.autocommit`, one statement each: the
engine's writes and the item batches) and SQLite's prepared statements
(`tasker.store.prepared`). A regression to a write (or a read) per item costs at least
one statement per item, and then more per item for a longer list: both are asserted
against.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from integration_support import task_class

from tasker import StepTemplate, Tasker, TaskRequest
from tasker.store import items as stored
from tasker.store import prepared

#: At most this many items run at once (and so are recorded per batch).
CONCURRENCY = 32


class Statements:
    """Counts the statements an app sends, and the item runner's batch writes."""

    def __init__(self, app: Tasker, monkeypatch: pytest.MonkeyPatch) -> None:
        self._lock = threading.Lock()
        self._on = False
        self.statements = 0
        self.batches = 0
        sa.event.listen(app.db.engine, "before_cursor_execute", self._executed)
        self._engine = app.db.engine
        autocommit = app.db.autocommit

        @contextmanager
        def counted_autocommit(counted: bool = True) -> Iterator[Any]:
            with autocommit(counted) as driver:
                self._add(1)  # one statement each (`Database.autocommit`)
                yield driver

        monkeypatch.setattr(app.db, "autocommit", counted_autocommit)
        for name in ("execute", "execute_many"):
            monkeypatch.setattr(prepared, name, self._once(getattr(prepared, name)))
        each = prepared.execute_each

        def counted_each(conn: Any, stmt: Any, rows: Sequence[Any]) -> Any:
            self._add(len(rows))  # one statement per row
            return each(conn, stmt, rows)

        monkeypatch.setattr(prepared, "execute_each", counted_each)
        write = stored.write

        def counted_write(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.batches += self._on
            return write(*args, **kwargs)

        monkeypatch.setattr(stored, "write", counted_write)

    def close(self) -> None:
        """Stop listening to the app's engine."""
        sa.event.remove(self._engine, "before_cursor_execute", self._executed)

    @contextmanager
    def counting(self) -> Iterator[None]:
        """Count what is sent inside the block (from zero)."""
        with self._lock:
            self.statements = self.batches = 0
            self._on = True
        try:
            yield
        finally:
            with self._lock:
                self._on = False

    def _add(self, n: int) -> None:
        with self._lock:
            if self._on:
                self.statements += n

    def _executed(self, *_: Any) -> None:
        self._add(1)

    def _once(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self._add(1)
            return fn(*args, **kwargs)

        return counted


@pytest.fixture
def statements(backend: Tasker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Statements]:
    """The statement counter of the test's app."""
    counter = Statements(backend, monkeypatch)
    yield counter
    counter.close()


def _noop(task: Any, sequence: Any, step: Any) -> None:
    return None


def _run(app: Tasker, counter: Statements, n: int) -> tuple[float, int]:
    """Run a task whose for_each step has `n` no-op items, counting what it sends.

    Returns:
        The statements per item, and how many batch writes the item runner made.
    """
    with counter.counting():
        t = app.enqueue(TaskRequest(name="items", context={"n": n}))
        app.run_until_idle()
    step = app.get_task(t.task_id).steps["each"]
    assert step.status == "complete"
    assert step.items == {"total": n, "complete": n, "error": 0, "pending": 0}
    return counter.statements / n, counter.batches


def test_statements_per_item_stay_bounded_from_200_to_2000_items(
    backend: Tasker, statements: Statements
) -> None:
    """Given a for_each step over no-op items (concurrency 32), When it runs over 200
    items and then over 2,000, Then the item runner wrote in batches (at least one per
    32 items, every one counted), and the 2,000 items cost no more statements per item
    than the 200 (plus a small margin), well under one per item."""
    backend.register(
        task_class(
            "items",
            [
                StepTemplate(
                    name="each",
                    handler=_noop,
                    for_each=lambda t, s: list(range(t.context["n"])),
                    concurrency=CONCURRENCY,
                )
            ],
        )
    )
    few, few_batches = _run(backend, statements, 200)
    many, many_batches = _run(backend, statements, 2000)
    # The counter sees the batches: each records at most CONCURRENCY items' outcomes.
    assert few_batches >= 200 / CONCURRENCY and many_batches >= 2000 / CONCURRENCY
    assert many * 2000 >= many_batches  # every batch costs at least one counted statement
    assert many <= few + 0.05, (few, many)
    assert many < 0.6, many
