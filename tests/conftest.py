"""Shared fixtures: a fake clock, fresh databases, a migrated app per backend, Redis.

PostgreSQL and Redis are preconditions of the suite, not options: when either cannot
be reached, the tests that need it FAIL (never skip) with a message saying what is
unreachable and how to start it (`scripts/services`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from tasker import Tasker
from tasker.testing.clock import FakeClock

#: The server databases are created from (trust auth, user root).
PG_ADMIN_URL = os.environ.get(
    "TASKER_TEST_PG_ADMIN_URL", "postgresql+psycopg://root@127.0.0.1:5432/postgres"
)
#: Redis database 15 is the tests' own: it is flushed before and after every test.
REDIS_URL = os.environ.get("TASKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

_PG_HINT = (
    "start it with `scripts/services` (or `pg_ctlcluster <version> main start`), "
    "or point TASKER_TEST_PG_ADMIN_URL at a server where user root may CREATE DATABASE"
)
_REDIS_HINT = (
    "start it with `scripts/services` (or `redis-server --daemonize yes`), "
    "or point TASKER_TEST_REDIS_URL at a Redis server"
)


@pytest.fixture
def clock() -> FakeClock:
    """A clock that only moves when the test says so."""
    return FakeClock()


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    """A SQLite file of this test's own."""
    return f"sqlite:///{tmp_path}/tasker.db"


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine]:
    """An autocommit connection to the maintenance database; fails when PostgreSQL is down."""
    engine = sa.create_engine(
        PG_ADMIN_URL,
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": 5},
    )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        pytest.fail(
            f"PostgreSQL is unreachable at {PG_ADMIN_URL} ({reason}); {_PG_HINT}",
            pytrace=False,
        )
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin: sa.Engine) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped (WITH FORCE) afterwards."""
    name = f"tasker_test_{uuid.uuid4().hex[:16]}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            sa.engine.make_url(PG_ADMIN_URL)
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with pg_admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def redis_url() -> Iterator[str]:
    """Redis database 15, flushed before and after the test; fails when Redis is down."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except Exception as exc:
        client.close()
        pytest.fail(
            f"Redis is unreachable at {REDIS_URL} ({type(exc).__name__}: {exc}); {_REDIS_HINT}",
            pytrace=False,
        )
    client.flushdb()
    try:
        yield REDIS_URL
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_url(request: pytest.FixtureRequest) -> str:
    """The database URL of the backend this test runs on: SQLite, then PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No `TASKER_*` variable of the surrounding environment reaches the apps of the test:
    they use the in-process broker and the defaults unless the test says otherwise."""
    for name in [n for n in os.environ if n.startswith("TASKER_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def make_app(
    backend_url: str, clock: FakeClock, clean_env: None
) -> Iterator[Callable[..., Tasker]]:
    """Make migrated apps on this test's backend (with extra settings); all closed after."""
    apps: list[Tasker] = []

    def make(**settings: Any) -> Tasker:
        app = Tasker(database_url=backend_url, clock=clock, **settings)
        apps.append(app)
        app.migrate()
        return app

    yield make
    for app in reversed(apps):
        app.close()


@pytest.fixture
def backend(make_app: Callable[..., Tasker]) -> Tasker:
    """A migrated app on the fake clock, once on SQLite and once on PostgreSQL."""
    return make_app()
