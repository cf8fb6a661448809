"""Which caller connections `enqueue(connection=)` takes: the same database as tasker's."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from tasker.control.caller import other_database


def url(text: str) -> sa.URL:
    return sa.engine.make_url(text)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("postgresql+psycopg://root@127.0.0.1:5432/app", "postgresql+psycopg2://u@localhost/app"),
        ("postgresql+psycopg://root@db.example:6000/app", "postgresql://x@db.example:6000/app"),
    ],
)
def test_the_same_server_database_is_accepted_whatever_the_driver_and_user(ours, theirs):
    """Given the same host (the local host's spellings are one), port and database, then
    the URLs name one database: no problem is reported."""
    assert other_database(url(ours), url(theirs)) is None


def test_the_same_sqlite_file_by_another_path_is_accepted(tmp_path, monkeypatch):
    """Given a relative and an absolute path to one SQLite file, then they are one database."""
    monkeypatch.chdir(tmp_path)
    absolute = os.path.join(str(tmp_path), "t.db")
    assert other_database(url(f"sqlite:///{absolute}"), url("sqlite:///t.db")) is None


@pytest.mark.parametrize(
    ("theirs", "says"),
    [
        ("postgresql+psycopg://root@127.0.0.1:5432/other", "database 'other'"),
        ("postgresql+psycopg://root@127.0.0.1:5433/app", "server"),
        ("postgresql+psycopg://root@db.example/app", "server"),
        ("sqlite:////tmp/app.db", "it is sqlite"),
    ],
)
def test_another_database_server_or_dialect_is_named(theirs, says):
    """Given a URL that differs in database, port, host or dialect, then the problem says
    which."""
    problem = other_database(url("postgresql+psycopg://root@localhost/app"), url(theirs))
    assert problem is not None and says in problem


def test_another_sqlite_file_is_named(tmp_path):
    """Given two SQLite files, then the problem names the caller's file."""
    problem = other_database(url(f"sqlite:///{tmp_path}/a.db"), url(f"sqlite:///{tmp_path}/b.db"))
    assert problem is not None and "b.db" in problem
