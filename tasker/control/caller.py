"""Enqueueing in the caller's transaction (`enqueue(connection=)`).

Which connections qualify (the same database as tasker's, able to hold a transaction),
and the messages of the tasks they stored, sent once that transaction commits and
dropped if it rolls back. The task's outbox row is written in the caller's transaction
too: if the process dies between the commit and the send, the sweeper sends it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection

from tasker.errors import InvalidRequestError
from tasker.store.db import Database

_LOCAL_HOSTS = {None, "", "localhost", "127.0.0.1", "::1"}
_DEFAULT_PORTS = {"postgresql": 5432}


def check_caller(db: Database, conn: Any) -> Connection:
    """Check that `conn` can take tasker's writes in its transaction (it writes nothing).

    Returns:
        The connection.

    Raises:
        InvalidRequestError: `conn` is not an open SQLAlchemy `Connection`, is to another
            database than tasker's (dialect, host, port or database differ), or is in
            autocommit mode (it cannot hold a transaction).
    """
    if not isinstance(conn, Connection):
        raise InvalidRequestError(
            f"connection= takes a SQLAlchemy Connection, got {type(conn).__name__}"
        )
    if conn.closed or conn.invalidated:
        raise InvalidRequestError("connection= is closed (or invalidated)")
    problem = other_database(db.engine.url, conn.engine.url)
    if problem is not None:
        raise InvalidRequestError(
            f"connection= is to a different database than tasker's: {problem}; "
            "the task must be written in the same database to commit with your transaction"
        )
    if _autocommit(conn):
        raise InvalidRequestError(
            "connection= is in autocommit mode: it has no transaction to write the task in"
        )
    return conn


def _autocommit(conn: Connection) -> bool:
    """Whether `conn` is in autocommit mode (SQLAlchemy's isolation level or the driver's)."""
    # SQLAlchemy has no public test covering an engine-wide AUTOCOMMIT: use its own.
    probe = getattr(conn, "_is_autocommit_isolation", None)
    if probe is not None and probe():
        return True
    if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return True
    return getattr(conn.connection.dbapi_connection, "autocommit", None) is True


def begin_writes(conn: Connection) -> None:
    """Make sure `conn` is in a transaction before tasker writes in it.

    A connection that is not in a transaction begins one, as any statement on a
    SQLAlchemy 2 connection does ("autobegin"): the caller commits it (`conn.commit()`).
    On SQLite, whose driver begins its transaction lazily, it begins now with
    `BEGIN IMMEDIATE` if it has not yet: a savepoint opened outside a transaction would
    commit on release, and a transaction that reads first and writes later can fail to
    take the write lock.
    """
    driver = conn.connection.dbapi_connection
    if conn.dialect.name == "sqlite" and not getattr(driver, "in_transaction", True):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def other_database(ours: sa.URL, theirs: sa.URL) -> str | None:
    """What differs between tasker's database URL and the caller's, or None.

    SQLite files are compared by their real path; server databases by dialect, host
    (the local host's spellings are one), port (the dialect's default if none) and name.
    """
    backend = ours.get_backend_name()
    if theirs.get_backend_name() != backend:
        return f"it is {theirs.get_backend_name()}, tasker's is {backend}"
    if backend == "sqlite":
        mine, yours = (os.path.realpath(u.database or "") for u in (ours, theirs))
        return None if mine == yours else f"the file {yours} is not tasker's {mine}"
    default = _DEFAULT_PORTS.get(backend)

    def where(u: sa.URL) -> tuple[str | None, int | None]:
        host = "localhost" if u.host in _LOCAL_HOSTS else u.host
        return host, u.port or default

    if where(ours) != where(theirs):
        return f"the server {theirs.host}:{theirs.port or default} is not tasker's"
    if ours.database != theirs.database:
        return f"the database {theirs.database!r} is not tasker's {ours.database!r}"
    return None


class AfterCommit:
    """Sends the messages of tasks written in callers' transactions once they commit.

    SQLAlchemy's connection "commit" event comes before the driver commits: the
    listener commits the driver's transaction itself, then sends (SQLAlchemy's own
    commit that follows finds nothing left to commit). So a message never reaches a
    worker before its task is visible. A rollback drops the ids. (A task taken back by
    a savepoint of the caller's that rolled back is still announced: its message finds
    no task and is a no-op.)
    """

    def __init__(self, send: Callable[[list[int]], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._pending: weakref.WeakKeyDictionary[Connection, list[int]] = (
            weakref.WeakKeyDictionary()
        )
        # A connection keeps its listeners (one can't be removed while its event runs):
        # they act only while it has ids pending.
        self._listening: weakref.WeakSet[Connection] = weakref.WeakSet()

    def add(self, conn: Connection, task_ids: list[int]) -> None:
        """Send these tasks' messages when `conn`'s transaction commits."""
        with self._lock:
            if conn not in self._listening:
                self._listening.add(conn)
                event.listen(conn, "commit", self._committed)
                event.listen(conn, "rollback", self._rolled_back)
            self._pending.setdefault(conn, []).extend(task_ids)

    def _take(self, conn: Connection) -> list[int]:
        with self._lock:
            return self._pending.pop(conn, [])

    def _committed(self, conn: Connection) -> None:
        ids = self._take(conn)
        if not ids:
            return
        driver = conn.connection.dbapi_connection
        error: type[Exception] = conn.dialect.loaded_dbapi.Error
        try:
            driver.commit()  # type: ignore[union-attr]
        except error as exc:  # as SQLAlchemy's own commit would raise it
            raise sa.exc.DBAPIError.instance(None, None, exc, error) from exc
        self._send(ids)

    def _rolled_back(self, conn: Connection) -> None:
        self._take(conn)
