"""SQLAlchemy statements compiled once and run on the SQLite driver connection.

On every execution SQLAlchemy generates the statement's cache key, builds and converts
its parameters and sets up a result: for the engine's short writes that costs more than
SQLite takes to run them. The hot writes of `tasker.store.sqlite` therefore run their
statements through `execute`, `execute_many` and `execute_each`, on the driver
connection of the SQLAlchemy transaction they are part of (its BEGIN and COMMIT stay
SQLAlchemy's; a connection not in one begins one, as SQLAlchemy's autobegin would). What
is run is SQLAlchemy's own compilation of the same statement: its text, the order of its
parameters and their conversions (JSON, times), so nothing is declared twice and the
rows written are the ones `Connection.execute` would write.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler

_Slot = tuple[str | None, Any, Callable[[Any], Any] | None]


class Prepared:
    """One statement as the SQLite dialect compiles it, with its parameters' order.

    Args:
        stmt: a statement with named bind parameters (an INSERT: of the table's columns).
        dialect: the connection's dialect.
        keys: for an INSERT, the columns it sets (the keys of its rows).

    Raises:
        ValueError: the statement needs per-execution rendering (an expanding IN).
    """

    def __init__(
        self, stmt: sa.ClauseElement, dialect: Dialect, keys: Sequence[str] | None = None
    ) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=None if keys is None else list(keys))
        assert isinstance(compiled, SQLCompiler)  # a DML statement or a SELECT
        self.sql = compiled.string
        if "POSTCOMPILE" in self.sql:
            raise ValueError(f"cannot prepare a statement rendered per execution: {self.sql}")
        slots: list[_Slot] = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            # A required parameter comes from the row; a literal of the statement is fixed.
            fixed = None if bind.required else bind.effective_value
            slots.append((name if bind.required else None, fixed, convert))
        self._slots = tuple(slots)
        returned = list(stmt.exported_columns) if isinstance(stmt, sa.ReturnsRows) else []
        #: The names of the columns it returns, and how each is read (JSON, times).
        self.names = tuple(c.key for c in returned)
        self._reads = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in returned
        )

    def row(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The driver's positional parameters for one row of named parameters."""
        out = []
        for name, fixed, convert in self._slots:
            value = fixed if name is None else params[name]
            out.append(value if convert is None else convert(value))
        return tuple(out)

    def read(self, row: Sequence[Any]) -> dict[str, Any]:
        """A row it returned, by column name, its values read as SQLAlchemy reads them."""
        return {
            n: (v if read is None else read(v))
            for n, v, read in zip(self.names, row, self._reads, strict=True)
        }


_cache: dict[tuple[sa.ClauseElement, type, tuple[str, ...] | None], Prepared] = {}
_lock = threading.Lock()


def prepared(
    stmt: sa.ClauseElement, dialect: Dialect, keys: Sequence[str] | None = None
) -> Prepared:
    """The `Prepared` form of a statement built once (at module level), compiled on first use."""
    # Statements hash by identity: the cache holds each module constant once per dialect.
    key = (stmt, type(dialect), None if keys is None else tuple(keys))
    found = _cache.get(key)
    if found is None:
        with _lock:
            found = _cache.setdefault(key, Prepared(stmt, dialect, keys))
    return found


def _driver(conn: Connection) -> sqlite3.Connection:
    if not conn.in_transaction():  # begin as SQLAlchemy would ("autobegin")
        conn.begin()
    driver: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
    return driver


def execute(
    conn: Connection, stmt: sa.ClauseElement, params: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Run a statement once in `conn`'s transaction; the rows it returns, by column name.

    Raises:
        sqlalchemy.exc.DBAPIError: as `Connection.execute` raises it (of the same kind).
    """
    p = prepared(stmt, conn.dialect, list(params) if isinstance(stmt, sa.Insert) else None)
    values = p.row(params)
    try:
        rows = _driver(conn).execute(p.sql, values).fetchall()
    except sqlite3.Error as exc:
        raise sa.exc.DBAPIError.instance(p.sql, values, exc, sqlite3.Error) from exc
    return [p.read(r) for r in rows]


def execute_many(
    conn: Connection, stmt: sa.ClauseElement, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Run a statement for each of `rows` (all with the same keys) in `conn`'s transaction.

    Raises:
        sqlalchemy.exc.DBAPIError: as `Connection.execute` raises it (of the same kind).
    """
    if not rows:
        return
    p = prepared(stmt, conn.dialect, list(rows[0]) if isinstance(stmt, sa.Insert) else None)
    values = [p.row(r) for r in rows]
    try:
        _driver(conn).executemany(p.sql, values)
    except sqlite3.Error as exc:
        raise sa.exc.DBAPIError.instance(p.sql, values, exc, sqlite3.Error) from exc


def execute_each(
    conn: Connection, stmt: sa.ClauseElement, rows: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Run a statement that returns one row (an INSERT ... RETURNING) for each of `rows`.

    Returns:
        The row each returned, in the order of `rows`.

    Raises:
        sqlalchemy.exc.DBAPIError: as `Connection.execute` raises it (of the same kind).
    """
    if not rows:
        return []
    p = prepared(stmt, conn.dialect, list(rows[0]) if isinstance(stmt, sa.Insert) else None)
    driver, out = _driver(conn), list[dict[str, Any]]()
    for r in rows:
        values = p.row(r)
        try:
            returned = driver.execute(p.sql, values).fetchall()
        except sqlite3.Error as exc:
            raise sa.exc.DBAPIError.instance(p.sql, values, exc, sqlite3.Error) from exc
        out.extend(p.read(x) for x in returned)
    return out
