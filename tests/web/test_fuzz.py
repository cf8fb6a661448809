"""Schemathesis against the live /openapi.json of a real `tasker serve` (SQLite, PostgreSQL).

Every operation gets a bounded number of generated requests (valid and invalid): the
server must never answer 5xx, and every response must conform to the schema it
publishes (status codes, content types, bodies).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks as openapi_checks
from web_support import WRITE_TOKEN, Server, serving

AUTH = {"Authorization": f"Bearer {WRITE_TOKEN}"}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    if request.param == "sqlite":
        with serving(folder, f"sqlite:///{folder}/fuzz.db", "--worker") as server:
            yield server
        return
    admin: sa.Engine = request.getfixturevalue("pg_admin")
    name = f"tasker_fuzz_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        url = admin.url.set(database=name).render_as_string(hide_password=False)
        with serving(folder, url, "--worker") as server:
            yield server
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def api_schema(live: Server):
    # A few real tasks, so that generated ids 1..3 find something.
    with live.client() as c:
        for who in ("a", "b"):
            c.post("/api/v1/tasks", json={"name": "greet", "context": {"who": who}})
        c.post("/api/v1/tasks", json={"name": "shipping"})
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json", headers=AUTH)
    schema.config.base_url = live.url
    return schema


CHECKS = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_5xx_and_every_response_conforms(api_schema, mode: GenerationMode) -> None:
    """Given the live schema, when schemathesis sends up to 20 generated requests (valid,
    then invalid) to each operation, then none is a 5xx and each response matches the
    schema; every operation of the schema was tried."""
    tried = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.generate],
        )
        def run(case) -> None:
            response = case.call(headers=AUTH)
            case.validate_response(response, checks=CHECKS)
            assert response.status_code < 500, response.text  # zero 5xx

        try:
            run()
        except Unsatisfiable:
            # Only an operation with no parameter and no body has nothing to make invalid.
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        tried.append(operation.label)
    assert len(tried) >= (15 if mode is GenerationMode.POSITIVE else 12), tried
