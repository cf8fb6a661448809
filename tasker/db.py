"""Connections and transactions for PostgreSQL and the embedded SQLite file.

Writes run in short transactions. On SQLite they begin with `BEGIN IMMEDIATE`
so two writers never deadlock on a lock upgrade; reads use a deferred `BEGIN`.
The file runs in WAL mode with a busy timeout, so readers never block writers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from tasker.errors import ConfigurationError

DEFAULT_SQLITE_FILE = "tasker.db"
_WRITE = "tasker_write"


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
        return sa.create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_recycle=1800,
        )
    raise ConfigurationError(f"unsupported database {backend!r}: use sqlite or postgresql")


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
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """An engine plus the two kinds of transaction tasker uses."""

    def __init__(self, url: str, pool_size: int = 5) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url, pool_size)
        self.dialect = self.engine.dialect.name
        self.commits = 0  # write transactions committed by this process (benchmarks)

    @property
    def is_postgres(self) -> bool:
        """Whether the database is PostgreSQL."""
        return self.dialect == "postgresql"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A short write transaction, committed on exit and rolled back on error."""
        with self.engine.connect().execution_options(**{_WRITE: True}) as conn, conn.begin():
            yield conn
        self.commits += 1

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        """Close every pooled connection (call after fork and on shutdown)."""
        self.engine.dispose()
