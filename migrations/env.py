"""Alembic environment: runs on the app's connection, or on TASKER_DATABASE_URL."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import engine_from_config, pool

from tasker.store.db import normalise_url
from tasker.store.schema import metadata

config = context.config


def run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


given = config.attributes.get("connection")
if given is not None:
    run(given)
else:
    url = os.environ.get("TASKER_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    section = {"sqlalchemy.url": normalise_url(url or "sqlite:///tasker.db")}
    engine = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as connection:
        run(connection)
