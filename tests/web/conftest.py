"""Fixtures of the web tests: a live `tasker serve` on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from web_support import Server, serving


@pytest.fixture
def server(backend_url: str, tmp_path: Path) -> Iterator[Server]:
    """`tasker serve --worker` on this test's backend (SQLite, then PostgreSQL)."""
    url = backend_url if not backend_url.startswith("sqlite") else f"sqlite:///{tmp_path}/web.db"
    with serving(tmp_path, url, "--worker") as live:
        yield live
