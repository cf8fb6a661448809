"""Running the Alembic migrations from inside the app (`Tasker.migrate`, `tasker migrate`)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from tasker.store.db import Database

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
    """Upgrade the schema to `revision`; safe to run from many processes at once."""
    cfg = alembic_config(db)
    with db.engine.connect().execution_options(tasker_write=True) as conn:
        if db.is_postgres:
            conn.execute(sa.select(sa.func.pg_advisory_lock(_MIGRATION_LOCK)))
            conn.commit()
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
        finally:
            if db.is_postgres:
                conn.execute(sa.select(sa.func.pg_advisory_unlock(_MIGRATION_LOCK)))
                conn.commit()
