"""Checking that values can be stored as JSON, and JSON containment."""

from __future__ import annotations

import math
import re
from typing import Any

_SCALARS = (int, bool, type(None))
# PostgreSQL's jsonb cannot hold NUL, and no JSON text can hold a lone surrogate.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def json_problem(value: Any, path: str = "$") -> str | None:
    """Describe why `value` cannot be stored as JSON, or return None if it can.

    Dict keys must be strings, floats finite, and containers dicts, lists or tuples.
    """
    if isinstance(value, str):
        return _string_problem(value, path)
    if isinstance(value, _SCALARS):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value!r}, which JSON cannot hold"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return (
                    f"{path} has a key {key!r} of type {type(key).__name__}; keys must be strings"
                )
            problem = _string_problem(key, f"{path} key {key!r}")
            if problem:
                return problem
            problem = json_problem(item, f"{path}.{key}")
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            problem = json_problem(item, f"{path}[{i}]")
            if problem:
                return problem
        return None
    return f"{path} is a {type(value).__name__}, which is not JSON-serialisable"


def _string_problem(value: str, path: str) -> str | None:
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    return f"{path} holds the character U+{ord(found.group()):04X}, which JSON storage cannot hold"


def contains(document: Any, pattern: Any) -> bool:
    """JSON containment with PostgreSQL's `@>` semantics.

    Objects contain objects whose every key is contained; arrays contain arrays
    whose every element is contained by some element; scalars must be equal; and,
    at the top level only, an array contains a scalar it holds.
    """
    if isinstance(document, list) and not isinstance(pattern, (dict, list)):
        return any(not isinstance(d, (dict, list)) and _scalar_eq(d, pattern) for d in document)
    return _contains(document, pattern)


def _contains(document: Any, pattern: Any) -> bool:
    if isinstance(pattern, dict):
        return isinstance(document, dict) and all(
            k in document and _contains(document[k], v) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        if not isinstance(document, list):
            return False
        return all(any(_contains(d, p) for d in document) for p in pattern)
    return not isinstance(document, (dict, list)) and _scalar_eq(document, pattern)


def _scalar_eq(a: Any, b: Any) -> bool:
    # JSON has no bool/int confusion: true is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)
