"""Regression checks for two bugs the chaos run found (both fixed in c8919c1).

- `repro_sweeper_deadlock.py`: a sweep and a claim deadlocked on PostgreSQL (the sweep
  locked outbox rows, then task rows; a claim locks a task row, then its outbox rows).
- `repro_ambiguous_commit.py`: a transaction whose COMMIT landed but reported an error
  was retried and applied twice (steps counted two attempts for one run).
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import repro_ambiguous_commit
import repro_sweeper_deadlock


@pytest.mark.postgres
def test_a_sweep_and_a_claim_do_not_deadlock() -> None:
    try:
        psycopg.connect(f"{repro_sweeper_deadlock.PG} dbname=postgres", connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable on 127.0.0.1:5432 ({exc}): scripts/services")
    assert repro_sweeper_deadlock.main() == 0


def test_an_ambiguous_commit_is_not_applied_twice() -> None:
    assert repro_ambiguous_commit.main() == 0


@pytest.mark.postgres
def test_an_ambiguous_write_is_not_applied_twice_on_postgresql() -> None:
    pg = repro_sweeper_deadlock.PG
    dbname = f"tasker_repro_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{pg} dbname=postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    try:
        url = f"postgresql+psycopg://root@127.0.0.1:5432/{dbname}"
        assert repro_ambiguous_commit.main(url) == 0
    finally:
        with psycopg.connect(f"{pg} dbname=postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')
