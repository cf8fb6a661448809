"""`tasker.core.jsonvalue.contains` agrees with PostgreSQL's `jsonb @> jsonb`.

SQLite has no containment operator: tasker evaluates `@>` in Python there, so the two
backends give the same answers only as long as this agreement holds.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from tasker.core.jsonvalue import contains

pytestmark = pytest.mark.postgres

scalars = hs.one_of(
    hs.none(),
    hs.booleans(),
    hs.integers(min_value=-3, max_value=3),
    hs.sampled_from([0.0, 1.0, 1.5, -2.0]),
    hs.sampled_from(["", "a", "b", "1", "true"]),
)
keys = hs.sampled_from(["a", "b", "c", "1"])
values = hs.recursive(
    scalars,
    lambda inner: hs.one_of(hs.lists(inner, max_size=4), hs.dictionaries(keys, inner, max_size=3)),
    max_leaves=10,
)


@hs.composite
def pairs(draw):
    """A document and a pattern: often a piece of the document, so that both answers occur."""
    document = draw(values)
    pattern = draw(hs.one_of(values, hs.just(document), fragments(document)))
    return document, pattern


@hs.composite
def fragments(draw, document):
    """A pattern made by dropping parts of `document` (contained, or nearly so)."""
    if isinstance(document, dict) and document:
        kept = draw(hs.lists(hs.sampled_from(sorted(document)), unique=True))
        return {k: draw(fragments(document[k])) for k in kept}
    if isinstance(document, list) and document:
        return draw(hs.lists(hs.sampled_from(document).flatmap(fragments), max_size=3))
    return document


@pytest.fixture
def pg(pg_url):
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        yield conn
    engine.dispose()


def postgres_contains(conn, document, pattern) -> bool:
    return conn.execute(
        sa.text("SELECT CAST(:d AS jsonb) @> CAST(:p AS jsonb)"),
        {"d": json.dumps(document), "p": json.dumps(pattern)},
    ).scalar()


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(pair=pairs())
def test_contains_agrees_with_postgresql_containment(pg, pair):
    """Given any two JSON values, tasker's containment answers as PostgreSQL's @> does."""
    document, pattern = pair
    assert contains(document, pattern) is postgres_contains(pg, document, pattern)
