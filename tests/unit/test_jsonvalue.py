"""JSON values: what can be stored, and containment with PostgreSQL `@>` semantics.

The containment table was checked against PostgreSQL 15 (`jsonb @> jsonb`);
tests/integration/test_json_containment.py keeps checking it on the real server.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from datetime import date

import pytest

from tasker.core.jsonvalue import contains, json_problem


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**70),
        1.5,
        "text",
        "",
        [],
        {},
        (1, "two"),
        {"a": [1, {"b": None, "c": [True, 2.5]}]},
        OrderedDict(a=1),
    ],
)
def test_json_values_have_no_problem(value):
    assert json_problem(value) is None


@pytest.mark.parametrize(
    ("value", "path", "what"),
    [
        (float("nan"), "$", "nan"),
        (math.inf, "$", "inf"),
        ({"a": [1, -math.inf]}, "$.a[1]", "inf"),
        ({"a": {"b": float("nan")}}, "$.a.b", "nan"),
        ({1: "x"}, "$", "keys must be strings"),
        ({"a": {(1, 2): "x"}}, "$.a", "keys must be strings"),
        ({"a": {1, 2}}, "$.a", "set"),
        ({"a": [object()]}, "$.a[0]", "object"),
        ({"when": date(2020, 1, 1)}, "$.when", "date"),
        ({"raw": b"bytes"}, "$.raw", "bytes"),
        (frozenset(), "$", "frozenset"),
    ],
)
def test_json_problem_names_the_path_and_the_culprit(value, path, what):
    problem = json_problem(value)
    assert problem is not None
    assert problem.startswith(path + " ")
    assert what in problem


# (document, pattern, PostgreSQL's answer to document @> pattern)
CONTAINMENT = [
    # objects: every key of the pattern, recursively
    ({"a": 1, "b": 2}, {"a": 1}, True),
    ({"a": 1}, {"a": 1, "b": 2}, False),
    ({"a": {"b": {"c": 1, "d": 2}, "e": 3}}, {"a": {"b": {"c": 1}}}, True),
    ({"a": {"b": {"c": 1}}}, {"a": {"b": {"c": 2}}}, False),
    ({"a": {"b": 1}}, {"a": {}}, True),
    ({"a": 1}, {"a": {}}, False),
    ({}, {}, True),
    ({"a": None}, {"a": None}, True),
    ({"a": None}, {"b": None}, False),
    # arrays: every pattern element contained by some document element, order-free
    ({"tags": ["x", "y", "z"]}, {"tags": ["z", "x"]}, True),
    ({"tags": ["x"]}, {"tags": ["x", "x"]}, True),
    ({"tags": ["x"]}, {"tags": ["x", "q"]}, False),
    ({"a": [1]}, {"a": []}, True),
    ({"items": [{"sku": "A", "qty": 2}, {"sku": "B"}]}, {"items": [{"sku": "A"}]}, True),
    ({"items": [{"sku": "A", "qty": 2}]}, {"items": [{"sku": "A", "qty": 3}]}, False),
    ([1, 2, [1, 3]], [[1, 3]], True),
    ([1, 2, [1, 3]], [1, 3], False),
    ([[1, 3]], [1], False),
    ([[]], [], True),
    ([], [[]], False),
    ([{}], [{}], True),
    ([{"a": 1}], [{}], True),
    ([{"a": 1, "b": 2}], [{"a": 1}], True),
    # no structural flattening below the top level
    ({"a": ["x"]}, {"a": "x"}, False),
    ({"a": [[1]]}, {"a": [1]}, False),
    ({"a": [1]}, {"a": [[1]]}, False),
    # top level only: an array contains a scalar it holds
    ([1, "two"], "two", True),
    ([1, "1"], 1, True),
    ([1, [2]], 2, False),
    ([None], None, True),
    ([{"a": 1}], {"a": 1}, False),
    (1, [1], False),
    # scalars: equal values; true is not 1; 1 is 1.0
    ("foo", "foo", True),
    (1, 1.0, True),
    (True, 1, False),
    (1, True, False),
    ([True], 1, False),
    ([1], True, False),
    ({"flag": False}, {"flag": 0}, False),
    ({"n": 0}, {"n": False}, False),
    ({"s": "1"}, {"s": 1}, False),
    (None, None, True),
    # mismatched kinds
    ({"a": 1}, [], False),
    ([], {}, False),
    ("x", {"x": 1}, False),
]


@pytest.mark.parametrize(("document", "pattern", "expected"), CONTAINMENT)
def test_contains_matches_postgresql_containment(document, pattern, expected):
    assert contains(document, pattern) is expected


def test_everything_contains_itself():
    for document, _, _ in CONTAINMENT:
        assert contains(document, document)


@pytest.mark.parametrize("value", [{"s": "a\x00b"}, {"k\x00": 1}], ids=["value", "key"])
def test_a_nul_character_is_a_problem_because_postgresql_cannot_store_it(value):
    assert json_problem(value) is not None
