"""Named tasks, named steps and dependent systems: rows created once and cached."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tasker.definition.registry import RegisteredTask
from tasker.store import schema as m
from tasker.store.db import Database


@dataclass(frozen=True)
class CatalogEntry:
    """Database ids of a registered task's named task and named steps."""

    named_task_id: int
    named_step_ids: dict[str, int]


class Catalog:
    """Finds or creates the catalog rows of registered tasks, once per process."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[tuple[str, str], CatalogEntry] = {}
        self._annotation_types: dict[str, int] = {}
        self._names: dict[int, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def entry(
        self, reg: RegisteredTask, now: datetime, conn: Connection | None = None
    ) -> CatalogEntry:
        """The ids for `reg`, creating the rows on first use (safe under races).

        Args:
            reg: the registered task.
            now: the time of the change.
            conn: the caller's connection, in its transaction (`enqueue(connection=)`):
                missing rows are created through it, not through tasker's pool (on SQLite
                the caller may hold the write lock: a write of our own would wait for it
                forever). Ids that are not committed yet are not cached: the caller may
                still roll back.
        """
        key = (reg.name, reg.version)
        found = self._cache.get(key)
        if found is not None:
            return found
        if conn is not None:
            found, committed = self._create(reg, now, conn)
            if committed:
                self._cache[key] = found
            return found
        with self._lock:
            found = self._cache.get(key)
            if found is None:
                found, _ = self._create(reg, now, None)
                self._cache[key] = found
        return found

    def task_name(self, named_task_id: int) -> tuple[str, str]:
        """The (name, version) of a named task id, cached (named tasks never change)."""
        found = self._names.get(named_task_id)
        if found is None:
            with self._db.read() as conn:
                row = conn.execute(
                    sa.select(m.named_tasks.c.name, m.named_tasks.c.version).where(
                        m.named_tasks.c.named_task_id == named_task_id
                    )
                ).one()
            found = self._names[named_task_id] = (row.name, row.version)
        return found

    def annotation_type_id(self, name: str, now: datetime, conn: Connection | None = None) -> int:
        """The id of an annotation type, creating it on first use.

        Args:
            conn: a connection in an open transaction to look for it and create it in
                (a transactional step's on SQLite, which holds the write lock).
        """
        found = self._annotation_types.get(name)
        if found is None:
            found, committed = self._get_or_create(
                m.annotation_types, {"name": name}, {"created_at": now}, conn
            )
            if committed:
                self._annotation_types[name] = found
        return found

    def _create(
        self, reg: RegisteredTask, now: datetime, conn: Connection | None
    ) -> tuple[CatalogEntry, bool]:
        """The entry of `reg`, and whether all its rows were committed already."""
        task_id, committed = self._get_or_create(
            m.named_tasks,
            {"name": reg.name, "version": reg.version},
            {"description": reg.handler.description or "", "created_at": now},
            conn,
        )
        system_ids: dict[str, int] = {}
        step_ids: dict[str, int] = {}
        for name, tpl in reg.steps.items():
            system = tpl.dependent_system
            if system not in system_ids:
                system_ids[system], known = self._get_or_create(
                    m.dependent_systems, {"name": system}, {"created_at": now}, conn
                )
                committed = committed and known
            step_ids[name], known = self._get_or_create(
                m.named_steps,
                {"dependent_system_id": system_ids[system], "name": name},
                {"description": tpl.description, "created_at": now},
                conn,
            )
            committed = committed and known
        return CatalogEntry(task_id, step_ids), committed

    def _get_or_create(
        self, table: sa.Table, key: dict[str, Any], extra: dict[str, Any], caller: Connection | None
    ) -> tuple[int, bool]:
        """The row's id, and whether it was committed (False: made in `caller`'s transaction).

        A committed row is read through tasker's pool (a read never waits for a writer);
        one that is missing is looked for, and else inserted, through `caller` when given.
        """
        pk = next(iter(table.primary_key.columns))
        where = sa.and_(*(table.c[k] == v for k, v in key.items()))
        for _ in range(2):
            with self._db.read() as conn:
                found = conn.execute(sa.select(pk).where(where)).scalar()
            if found is not None:
                return int(found), True
            if caller is not None:
                found = caller.execute(sa.select(pk).where(where)).scalar()
                if found is not None:
                    return int(found), False  # an earlier call of this transaction made it
            try:
                if caller is not None:
                    # A savepoint: a concurrent creator's row must not break the caller's
                    # transaction (PostgreSQL aborts it on an error).
                    with caller.begin_nested():
                        return _insert(caller, table, {**key, **extra}), False
                with self._db.write() as conn:
                    return _insert(conn, table, {**key, **extra}), True
            except IntegrityError:
                continue  # another process created it first: read it back
        raise RuntimeError(f"could not create a {table.name} row for {key}")


def _insert(conn: Connection, table: sa.Table, values: dict[str, Any]) -> int:
    pk = next(iter(table.primary_key.columns))
    return int(conn.execute(table.insert().values(values).returning(pk)).scalar_one())
