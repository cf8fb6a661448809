"""Running the Alembic migrations from inside the app (`Tasker.migrate`, `tasker migrate`)."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from tasker.store.db import Database

log = logging.getLogger("tasker.migrate")

_MIGRATION_LOCK = 0x7A5C3F  # PostgreSQL advisory lock: one migrator at a time


def migrations_path() -> Path:
    """The Alembic scripts: packaged in a wheel, or the repository's `migrations/`."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"tasker's migrations are missing (looked in {package})")


def alembic_config(db: Database) -> Config:
    """An Alembic config bound to the app's database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_path()))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    """Upgrade the schema to `revision`; safe to run from many processes at once.

    On PostgreSQL a session advisory lock lets one migrator at a time run. A failing
    migration raises its own error; the lock is released on the way out, and if that
    cannot be done (the session is broken) the connection is closed instead of going
    back to the pool, which ends the session and so frees the lock.

    Raises:
        Whatever the failing migration raised (an SQLAlchemy error, usually).
    """
    cfg = alembic_config(db)
    with db.engine.connect().execution_options(tasker_write=True) as conn:
        if db.is_postgres:
            conn.execute(sa.select(sa.func.pg_advisory_lock(_MIGRATION_LOCK)))
            conn.commit()
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
        except BaseException:
            if db.is_postgres:
                _unlock_after_failure(conn)
            raise
        if db.is_postgres:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(_MIGRATION_LOCK)))
            conn.commit()


def _unlock_after_failure(conn: Connection) -> None:
    """Free the migration lock of a connection whose migration failed; never raises."""
    try:
        # The failed transaction must end before the session runs anything else.
        conn.rollback()
        conn.execute(sa.select(sa.func.pg_advisory_unlock(_MIGRATION_LOCK)))
        conn.commit()
    except Exception:
        log.warning("could not release the migration lock; closing the connection", exc_info=True)
        # A closed session holds no lock; an invalidated connection is never pooled again.
        conn.invalidate()
