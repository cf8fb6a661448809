"""Fast JSON for the C ABI's hot path: one cached encoder, and a decoder for compact text."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def _refuse(value: object) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_encoder() -> Callable[[Any], str]:
    """Builds compact, strict (no NaN) JSON encoding once.

    `json.dumps` builds CPython's C encoder anew on every call, about half the cost of
    encoding a small object; this keeps one (without the circular-reference check: a cycle
    ends in RecursionError instead). Elsewhere it falls back to `JSONEncoder.encode`.
    """
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # not CPython
        return json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
    iterencode = c_make_encoder(
        None, _refuse, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )
    return lambda value: "".join(iterencode(value, 0))


encode: Callable[[Any], str] = _make_encoder()
"""Encodes a value as compact ASCII JSON.

Raises:
    TypeError: a value is not JSON-serialisable.
    ValueError: a float is NaN or infinite.
    RecursionError: the value is circular or nested too deeply.
"""

_raw_decode = json.JSONDecoder().raw_decode


def decode(answer: bytes) -> Any:
    """Parses compact UTF-8 JSON text, as the native library writes it.

    `json.loads` spends most of its time on small texts matching the whitespace around the
    value; compact text has none, so this decodes the value directly.

    Args:
        answer: the JSON text.

    Raises:
        ValueError: the text is not UTF-8 or not exactly one JSON value.
    """
    text = answer.decode()
    value, end = _raw_decode(text)
    if end != len(text):
        raise ValueError(f"extra data after the JSON value at offset {end}")
    return value
