"""The PostgreSQL connection pool replaces dead connections before handing them out."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from tasker.store import db as dbmod
from tasker.store.db import Database

pytestmark = pytest.mark.postgres


def _pid(db: Database) -> int:
    with db.read() as conn:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def _terminate(pg_admin: sa.Engine, pid: int) -> None:
    with pg_admin.connect() as admin:
        assert admin.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar_one()


def test_a_connection_the_server_closed_is_replaced_at_checkout(pg_url, pg_admin):
    """Given a pooled connection that was used a moment ago, when the server terminates it
    (as a restart does), then the next transaction runs on a new connection, without error."""
    db = Database(pg_url, pool_size=1)
    try:
        old = _pid(db)
        _terminate(pg_admin, old)
        time.sleep(0.1)  # the server's goodbye reaches the idle socket
        assert _pid(db) != old
        with db.autocommit() as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
    finally:
        db.dispose()


def test_driver_errors_of_autocommit_statements_come_out_as_sqlalchemy_errors(pg_url):
    """Given the raw autocommit connection of the hot writes, when a statement breaks a
    constraint or is invalid, then SQLAlchemy's error kinds are raised (what callers
    catch), nothing is left half done, and the pooled connection stays usable."""
    db = Database(pg_url, pool_size=1)
    try:
        with db.autocommit() as conn:
            conn.execute("CREATE TEMP TABLE t (k int PRIMARY KEY)")
            conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sa.exc.IntegrityError) as caught, db.autocommit() as conn:
            conn.execute("INSERT INTO t VALUES (2), (1)")
        assert not caught.value.connection_invalidated
        with pytest.raises(sa.exc.ProgrammingError), db.autocommit() as conn:
            conn.execute("SELECT * FROM no_such_table")
        with db.autocommit() as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1
    finally:
        db.dispose()


def test_a_busy_pool_does_not_ping(pg_url, monkeypatch):
    """Given a pool in steady use, when connections are checked out back to back,
    then no ping is sent; after the idle limit, one is."""
    db = Database(pg_url, pool_size=1)
    pings = []
    real_ping = db.engine.dialect.do_ping

    def counting_ping(dbapi_conn):
        pings.append(1)
        return real_ping(dbapi_conn)

    monkeypatch.setattr(db.engine.dialect, "do_ping", counting_ping)
    monkeypatch.setattr(dbmod, "IDLE_PING_SECONDS", 0.2)
    try:
        for _ in range(5):
            _pid(db)
        assert pings == []
        time.sleep(0.3)
        _pid(db)
        assert pings == [1]
    finally:
        db.dispose()


def test_a_connection_dead_while_idle_in_the_pool_is_replaced(pg_url, pg_admin, monkeypatch):
    """Given a connection idle past the limit whose server process was killed,
    when it is checked out, then the ping fails and a new connection is used."""
    monkeypatch.setattr(dbmod, "IDLE_PING_SECONDS", 0.0)
    db = Database(pg_url, pool_size=1)
    try:
        old = _pid(db)
        _terminate(pg_admin, old)
        assert _pid(db) != old
    finally:
        db.dispose()


def _hot_pid(db: Database) -> int:
    with db.autocommit() as conn:
        return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])


def test_autocommit_statements_keep_their_connection_without_a_checkout_each(pg_url):
    """Given a pool of 4, when hot statements run one after the other, then they reuse one
    driver connection kept in autocommit mode (one pool checkout in all, not one each),
    and `dispose` hands it back to the pool."""
    db = Database(pg_url, pool_size=4)
    checkouts = []
    sa.event.listen(db.engine, "checkout", lambda *a: checkouts.append(1))
    try:
        pids = {_hot_pid(db) for _ in range(5)}
        assert len(pids) == 1
        assert len(checkouts) == 1
        assert db.engine.pool.checkedout() == 1  # kept for the next hot statement
        with db.read() as conn:  # a transaction still takes its own pooled connection
            assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
    finally:
        db.dispose()
    assert db._hot == []


def test_a_kept_autocommit_connection_the_server_closed_is_replaced(pg_url, pg_admin):
    """Given a driver connection kept for hot statements, when the server terminates it
    (as a restart does), then the next hot statement runs on a new connection, without
    error; one killed while idle past the ping limit is replaced too."""
    db = Database(pg_url, pool_size=4)
    try:
        old = _hot_pid(db)
        _terminate(pg_admin, old)
        time.sleep(0.1)  # the server's goodbye reaches the idle socket
        new = _hot_pid(db)
        assert new != old
        assert _hot_pid(db) == new
    finally:
        db.dispose()


def test_a_kept_connection_idle_past_the_limit_is_pinged_and_replaced_if_dead(
    pg_url, pg_admin, monkeypatch
):
    """Given a kept connection idle past the ping limit whose server process was killed,
    when a hot statement comes, then the ping fails and a new connection is used."""
    db = Database(pg_url, pool_size=4)
    try:
        old = _hot_pid(db)
        monkeypatch.setattr(dbmod, "IDLE_PING_SECONDS", 0.0)
        monkeypatch.setattr(dbmod.select, "select", lambda *a: ([], [], []))  # no goodbye seen
        _terminate(pg_admin, old)
        time.sleep(0.05)
        assert _hot_pid(db) != old
    finally:
        db.dispose()
