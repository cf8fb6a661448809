"""The Alembic migrations reproduce `tasker.store.schema.metadata`, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from integration_support import task_class

from tasker import StepTemplate, Tasker, TaskRequest
from tasker.store import schema as m
from tasker.store.migrate import _MIGRATION_LOCK, alembic_config

GIN_INDEX = "ix_tasker_task_annotations_annotation"
TABLES = {t.name for t in m.metadata.sorted_tables}


@pytest.fixture
def fresh(backend_url, clock, clean_env):
    """An app on an empty database (not migrated yet)."""
    app = Tasker(database_url=backend_url, clock=clock)
    yield app
    app.close()


def differences(app: Tasker) -> list:
    """What autogenerate would change to make the database match the models."""
    with app.db.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                # Alembic reflects SQLite's server default '' as a different clause.
                "compare_server_default": app.db.is_postgres,
            },
        )
        return compare_metadata(ctx, m.metadata)


def assert_schema_matches_models(app: Tasker) -> None:
    diffs = differences(app)
    if app.db.is_postgres:
        assert diffs == []
    else:
        # The GIN index exists on PostgreSQL only, by design: it is the one difference.
        assert [(d[0], d[1].name) for d in diffs] == [("add_index", GIN_INDEX)], diffs
    inspector = sa.inspect(app.db.engine)
    assert set(inspector.get_table_names()) >= TABLES
    for table in ("tasker_tasks", "tasker_workflow_steps"):
        checks = {c["name"] for c in inspector.get_check_constraints(table)}
        assert f"ck_{table}_status" in checks


def downgrade_to_base(app: Tasker) -> None:
    cfg = alembic_config(app.db)
    with app.db.engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
        conn.commit()


def test_migrating_a_fresh_database_reproduces_the_models(fresh):
    """Given an empty database, when migrated, then autogenerate finds nothing to change
    (but the PostgreSQL-only GIN index on SQLite)."""
    assert sa.inspect(fresh.db.engine).get_table_names() == []
    fresh.migrate()
    assert_schema_matches_models(fresh)


def test_the_special_indexes_exist_as_designed(fresh):
    """The due-task index is partial on both backends; the annotation index is a GIN
    index with jsonb_path_ops on PostgreSQL and absent on SQLite."""
    fresh.migrate()
    with fresh.db.engine.connect() as conn:
        if fresh.db.is_postgres:
            rows = dict(
                conn.execute(
                    sa.text(
                        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename LIKE 'tasker_%'"
                    )
                ).all()
            )
            assert "USING gin (annotation jsonb_path_ops)" in rows[GIN_INDEX]
            due = rows["ix_tasker_tasks_due"]
        else:
            rows = dict(
                conn.execute(
                    sa.text(
                        "SELECT name, sql FROM sqlite_master"
                        " WHERE type = 'index' AND sql IS NOT NULL"
                    )
                ).all()
            )
            assert GIN_INDEX not in rows
            due = rows["ix_tasker_tasks_due"]
    assert "WHERE" in due.upper() and "pending" in due and "in_progress" in due


def test_migrate_is_idempotent(fresh):
    """Given a migrated database holding a task, when migrate runs twice more, then the
    schema is unchanged and the task is still there."""
    fresh.migrate()
    fresh.register(task_class("keep", [StepTemplate(name="s", handler=lambda t, q, s: {})]))
    task = fresh.enqueue(TaskRequest(name="keep"))
    fresh.migrate()
    fresh.migrate()
    assert_schema_matches_models(fresh)
    with fresh.db.engine.connect() as conn:
        versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    assert len(versions) == 1
    assert fresh.get_task(task.task_id).status == "pending"


def test_downgrade_to_base_and_upgrade_again(fresh):
    """Given a migrated database, when downgraded to base, then no tasker table is left;
    when upgraded again, then the schema matches the models and the app works."""
    fresh.migrate()
    downgrade_to_base(fresh)
    left = set(sa.inspect(fresh.db.engine).get_table_names())
    assert not left & TABLES, left
    fresh.migrate()
    assert_schema_matches_models(fresh)
    fresh.register(task_class("again", [StepTemplate(name="s", handler=lambda t, q, s: {"ok": 1})]))
    task = fresh.enqueue(TaskRequest(name="again"))
    fresh.run_until_idle()
    assert fresh.get_task(task.task_id).steps["s"].results == {"ok": 1}


@pytest.mark.postgres
def test_a_failing_migration_on_postgres_raises_its_own_error_and_leaves_no_lock(pg_url, clean_env):
    """Given a PostgreSQL database where a table the first migration creates already
    exists, when migrate runs, then the error raised is that migration's own (the
    relation exists), and no session, pooled or not, still holds the migration lock."""
    app = Tasker(database_url=pg_url)
    try:
        with app.db.engine.connect() as conn:
            conn.execute(sa.text("CREATE TABLE tasker_outbox (x integer)"))
            conn.commit()
        with pytest.raises(sa.exc.ProgrammingError, match="already exists"):
            app.migrate()
        assert _migration_locks(app) == 0
        with app.db.engine.connect() as conn:
            conn.execute(sa.text("DROP TABLE tasker_outbox"))
            conn.commit()
        app.migrate()  # the lock is free: a second migrator gets it at once
        assert_schema_matches_models(app)
    finally:
        app.close()


def _migration_locks(app: Tasker) -> int:
    with app.db.engine.connect() as conn:  # pooled: maybe the one the migrator used
        held = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = :k"
                " AND database = (SELECT oid FROM pg_database"
                " WHERE datname = current_database())"
            ),
            {"k": _MIGRATION_LOCK},
        ).scalar()
        conn.rollback()
    return int(held or 0)


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["aborted transaction", "lost connection"])
def test_a_migration_failing_outside_its_transaction_surfaces_its_error_and_frees_the_lock(
    pg_url, clean_env, monkeypatch, how
):
    """Given a migration that fails leaving its connection in an aborted transaction (or
    with its server session killed), when migrate runs, then the migration's own error is
    raised (not the unlock's), and no pooled connection keeps the migration lock."""
    app = Tasker(database_url=pg_url)

    def failing_upgrade(cfg, revision):
        conn = cfg.attributes["connection"]
        if how == "aborted transaction":
            conn.execute(sa.text("SELECT 1 / 0"))
        else:
            conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))

    monkeypatch.setattr("tasker.store.migrate.command.upgrade", failing_upgrade)
    try:
        expected = "division by zero" if how == "aborted transaction" else "terminat"
        with pytest.raises(sa.exc.DBAPIError, match=expected):
            app.migrate()
        assert _migration_locks(app) == 0
        monkeypatch.undo()
        app.migrate()
        assert_schema_matches_models(app)
    finally:
        app.close()
