"""Connections and transactions for PostgreSQL and the embedded SQLite file.

Writes run in short transactions. On SQLite they begin with `BEGIN IMMEDIATE`
so two writers never deadlock on a lock upgrade; reads use a deferred `BEGIN`.
The file runs in WAL mode with a busy timeout, so readers never block writers.
"""

from __future__ import annotations

import os
import select
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from tasker.errors import ConfigurationError

_WRITE = "tasker_write"
#: A pooled PostgreSQL connection unused for longer than this is pinged before use.
IDLE_PING_SECONDS = 1.0


def normalise_url(url: str) -> str:
    """Map plain `postgresql://` URLs to the psycopg 3 driver that tasker ships with."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, pool_size: int = 5) -> Engine:
    """Create the SQLAlchemy engine for a database URL.

    Args:
        url: `sqlite:///path.db` or `postgresql+psycopg://...`.
        pool_size: connections kept open (size it to the worker threads).

    Raises:
        ConfigurationError: the URL is not SQLite or PostgreSQL, or cannot be parsed.
    """
    try:
        parsed = sa.engine.make_url(normalise_url(url))
    except Exception as exc:
        raise ConfigurationError(f"cannot parse database URL {url!r}: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, pool_size)
    if backend == "postgresql":
        return _postgres_engine(parsed, pool_size)
    raise ConfigurationError(f"unsupported database {backend!r}: use sqlite or postgresql")


def _postgres_engine(url: sa.URL, pool_size: int) -> Engine:
    """A pooled engine that checks a connection before use only when it may be dead.

    SQLAlchemy's `pool_pre_ping` costs a round trip and a server transaction on every
    checkout. Instead a connection is pinged when it sat idle in the pool for a while,
    or when the server sent it something while it was idle (a restarting server
    closes its connections with a message): both cost nothing on a busy pool.
    """
    # LIFO: the connections in use stay warm (no pings); the others idle until recycled.
    engine = sa.create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800, pool_use_lifo=True
    )

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["tasker_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("tasker_idle_since")
        if since is not None and not _alive(engine, dbapi_conn, since):  # None: a new one
            raise sa.exc.DisconnectionError("the connection did not answer a ping")

    return engine


def _alive(engine: Engine, dbapi_conn: Any, idle_since: float) -> bool:
    """Whether a PostgreSQL connection idle since `idle_since` may be used.

    Pinged only when it idled for a while or the server sent it something meanwhile (a
    restarting server closes its connections with a message): free on a busy pool.
    """
    stale = time.monotonic() - idle_since > IDLE_PING_SECONDS
    if not stale:
        try:
            stale = bool(select.select([dbapi_conn.pgconn.socket], [], [], 0)[0])
        except (OSError, ValueError):
            stale = True
    if not stale:
        return True
    try:
        return bool(engine.dialect.do_ping(dbapi_conn))
    except Exception:
        return False


def _sqlite_engine(url: sa.URL, pool_size: int) -> Engine:
    if url.database in (None, "", ":memory:"):
        raise ConfigurationError(
            "tasker needs a SQLite *file* (workers and the sweeper share it): "
            "use sqlite:///path/to/tasker.db"
        )
    folder = os.path.dirname(os.path.abspath(url.database))
    if not os.path.isdir(folder):
        raise ConfigurationError(f"the folder of the SQLite database does not exist: {folder}")
    engine = sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        # On the driver connection: SQLAlchemy's statement machinery would cost more than
        # the BEGIN itself, on every transaction. Its errors come out as SQLAlchemy's.
        sql = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        try:
            conn.connection.driver_connection.execute(sql)  # type: ignore[union-attr]
        except sqlite3.Error as exc:
            raise sa.exc.DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc

    return engine


class Database:
    """An engine plus the two kinds of transaction tasker uses."""

    def __init__(self, url: str, pool_size: int = 5) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url, pool_size)
        self.dialect = self.engine.dialect.name
        self.commits = 0  # write transactions committed by this process (benchmarks)
        self._driver_error: type[Exception] = self.engine.dialect.loaded_dbapi.Error
        # Driver connections kept in autocommit mode between hot statements: no checkout,
        # reset and mode switch per statement. They stay checked out of the pool, so at
        # most half of `pool_size` (the pool's overflow leaves the rest of it to others).
        self._hot: list[tuple[Any, Any, float]] = []
        self._hot_max = pool_size // 2

    @property
    def is_postgres(self) -> bool:
        """Whether the database is PostgreSQL."""
        return self.dialect == "postgresql"

    def connect_to_write(self) -> Connection:
        """A pooled connection whose transactions write (on SQLite: `BEGIN IMMEDIATE`)."""
        return self.engine.connect().execution_options(**{_WRITE: True})

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A short write transaction, committed on exit and rolled back on error."""
        with self.connect_to_write() as conn, conn.begin():
            yield conn
        self.commits += 1

    @contextmanager
    def autocommit(self, counted: bool = True) -> Iterator[Any]:
        """A pooled PostgreSQL driver connection (psycopg) in autocommit mode.

        For the hot writes, each a single statement that commits by itself: one round
        trip, without SQLAlchemy's statement machinery. Driver errors come out as
        SQLAlchemy's (`DBAPIError` and its kinds), with `connection_invalidated` set
        and the connection dropped from the pool when it is dead.

        Args:
            counted: count it in `commits` (False for a read).
        """
        raw, driver = self._take_hot()
        keep = False
        try:
            try:
                yield driver
                keep = True
            except self._driver_error as exc:
                dead = self.engine.dialect.is_disconnect(exc, driver, None)  # type: ignore[arg-type]
                if dead:
                    raw.invalidate(exc)
                keep = not dead
                raise sa.exc.DBAPIError.instance(
                    None, None, exc, self._driver_error, connection_invalidated=dead
                ) from exc
        finally:
            if keep and not driver.closed and len(self._hot) < self._hot_max:
                self._hot.append((raw, driver, time.monotonic()))
            else:
                _give_back(raw, driver)
        self.commits += counted

    def _take_hot(self) -> tuple[Any, Any]:
        """A kept autocommit connection that is still alive, else one from the pool."""
        while True:
            try:
                raw, driver, since = self._hot.pop()  # atomic: threads share the list
            except IndexError:
                break
            if _alive(self.engine, driver, since):
                return raw, driver
            raw.invalidate()
        fresh = self.engine.raw_connection()
        conn: Any = fresh.driver_connection
        conn.autocommit = True
        return fresh, conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        """Close every pooled connection (call after fork and on shutdown)."""
        while self._hot:
            raw, driver, _ = self._hot.pop()
            _give_back(raw, driver)
        self.engine.dispose()


def _give_back(raw: Any, driver: Any) -> None:
    """Return an autocommit driver connection to the pool in the pool's default mode."""
    if not driver.closed:
        driver.autocommit = False
    raw.close()


def reading(db: Database, caller: Connection | None) -> AbstractContextManager[Connection]:
    """A read transaction on tasker's pool, or `caller`'s connection when given.

    Reads that must see what the caller's open transaction wrote (`enqueue(connection=)`)
    go through its connection, in its transaction, which they leave open.
    """
    return nullcontext(caller) if caller is not None else db.read()
