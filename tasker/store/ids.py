"""Task ids handed out before their rows exist (`step.spawn` returns its child's id).

A spawned child is inserted with its parent's outcome, in that fenced write; the handler
that spawned it has its id already. On PostgreSQL the ids come from the tasks' own
sequence (`tasker_tasks_task_id_seq`), a block at a time. SQLite has no sequences: the
counter row `tasks` of `tasker_id_counters` is moved forward in a short write
transaction, from the larger of itself and the largest task id, and every SQLite insert
of tasks moves it past the ids it uses (`reserve`, in the insert's transaction), so an
id handed out ahead is never taken by an ordinary enqueue meanwhile.

An id handed out and never used (its attempt failed) is simply skipped.
"""

from __future__ import annotations

import threading

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasker.store import prepared
from tasker.store import schema as m
from tasker.store.db import Database

_COUNTER = "tasks"
#: Ids taken from the database at a time (per process).
BLOCK = 32
_C, _T = m.id_counters, m.tasks


_TOP = sa.select(sa.func.coalesce(sa.func.max(_T.c.task_id), 0)).scalar_subquery()
# Built once: every SQLite enqueue runs it, on the driver (see `tasker.store.prepared`).
_RESERVE = (
    sa.update(_C)
    .where(_C.c.name == _COUNTER)
    .values(last_id=sa.func.max(_C.c.last_id, _TOP) + sa.bindparam("count", type_=sa.Integer))
    .returning(_C.c.last_id)
)


def reserve(conn: Connection, count: int) -> int:
    """Move SQLite's task id counter past `count` new ids, in `conn`'s transaction.

    Returns:
        The first of the `count` ids reserved (they follow each other).
    """
    rows = prepared.execute(conn, _RESERVE, {"count": count})
    if not rows:  # the first reservation of this database
        first = int(conn.execute(sa.select(_TOP)).scalar_one()) + 1
        conn.execute(_C.insert().values(name=_COUNTER, last_id=first + count - 1))
        return first
    return int(rows[0]["last_id"]) - count + 1


class TaskIds:
    """Hands out task ids ahead of their rows; thread-safe."""

    def __init__(self, db: Database, block: int = BLOCK) -> None:
        self._db = db
        self._block = block
        self._lock = threading.Lock()
        self._held: list[int] = []  # the ids of the block held, last one first

    def take(self, conn: Connection | None = None) -> int:
        """One task id no other row has or will get.

        Args:
            conn: a connection in an open transaction (a transactional step's): on SQLite
                the id is reserved there, alone and not cached, since that transaction
                may roll back (and it holds the write lock a write of our own would wait
                for). PostgreSQL's sequence ignores transactions: the block serves.
        """
        if conn is not None and not self._db.is_postgres:
            return reserve(conn, 1)
        with self._lock:
            if not self._held:
                self._held = sorted(self._fetch(), reverse=True)
            return self._held.pop()

    def _fetch(self) -> list[int]:
        """A new block of ids."""
        with self._db.write() as conn:
            if self._db.is_postgres:
                # Concurrent sessions may interleave with these: they are ids all the same.
                return [
                    int(i)
                    for i in conn.execute(
                        sa.text(
                            "SELECT nextval('tasker_tasks_task_id_seq'::regclass) "
                            "FROM generate_series(1, :n)"
                        ),
                        {"n": self._block},
                    ).scalars()
                ]
            first = reserve(conn, self._block)
            return list(range(first, first + self._block))
