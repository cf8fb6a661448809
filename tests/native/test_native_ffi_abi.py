"""The C ABI itself, through cffi directly: bad input of every kind is a JSON error."""

from __future__ import annotations

import json
import threading

import pytest

pytestmark = pytest.mark.native

I64_MAX = 2**63 - 1
ITEM = {"sku": "a", "unit_price_cents": 100, "quantity": 1}


def error_of(answer: bytes) -> dict[str, str]:
    value = json.loads(answer)
    assert set(value) == {"error"}, value
    assert set(value["error"]) == {"kind", "message"}, value
    return value["error"]


@pytest.mark.parametrize("symbol", ["handle", "order_totals"])
def test_null_pointer_is_a_json_error(raw, symbol):
    error = error_of(raw.call(symbol, raw.ffi.NULL))
    assert error == {"kind": "null_pointer", "message": f"{symbol}: input is a null pointer"}


@pytest.mark.parametrize("symbol", ["handle", "order_totals"])
@pytest.mark.parametrize(
    ("data", "offset"),
    [(b"\xff", 0), (b'{"sku": "\xc3"}', 9), (b'{"a": "\xed\xa0\x80"}', 7), (b"\x80abc", 0)],
)
def test_invalid_utf8_is_a_json_error(raw, symbol, data, offset):
    error = error_of(raw.call(symbol, data))
    assert error["kind"] == "invalid_utf8"
    assert f"offset {offset}" in error["message"]


@pytest.mark.parametrize("symbol", ["handle", "order_totals"])
@pytest.mark.parametrize(
    "data",
    [
        b"",
        b" ",
        b"{",
        b"nope",
        b"[1,]",
        b'{"a": 1,}',
        b"{'a': 1}",
        b'{"a": NaN}',
        b"1e999",
        b"[" * 100_000,
        b'{"a": 1} trailing',
    ],
)
def test_invalid_json_is_a_json_error(raw, symbol, data):
    error = error_of(raw.call(symbol, data))
    assert error["kind"] == "invalid_json"
    assert error["message"].startswith(f"{symbol}: input is not valid JSON: ")


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([ITEM], "inputs must be an object; got array"),
        ("order", "inputs must be an object; got string"),
        (None, "inputs must be an object; got null"),
        ({}, "line_items is required"),
        ({"line_items": None, "tax_rate_bps": 0}, "line_items must be an array; got null"),
        ({"line_items": "abc", "tax_rate_bps": 0}, "line_items must be an array; got string"),
        ({"line_items": [[]], "tax_rate_bps": 0}, "line_items[0] must be an object; got array"),
        ({"line_items": [{"quantity": 1}]}, "line_items[0].sku is required"),
        ({"line_items": [{**ITEM, "sku": 12}]}, "line_items[0].sku must be a string; got 12"),
        (
            {"line_items": [ITEM, {"sku": "b", "quantity": 1}]},
            "line_items[1].unit_price_cents is required",
        ),
        (
            {"line_items": [{**ITEM, "quantity": "3"}], "tax_rate_bps": 0},
            "line_items[0].quantity must be an integer from 0 to 9223372036854775807; got string",
        ),
        (
            {"line_items": [{**ITEM, "quantity": 1.5}], "tax_rate_bps": 0},
            "line_items[0].quantity must be an integer from 0 to 9223372036854775807; got 1.5",
        ),
        (
            {"line_items": [{**ITEM, "unit_price_cents": -1}], "tax_rate_bps": 0},
            "line_items[0].unit_price_cents must be an integer from 0 to 9223372036854775807; "
            "got -1",
        ),
        (
            {"line_items": [ITEM], "tax_rate_bps": I64_MAX + 1},
            "tax_rate_bps must be an integer from 0 to 9223372036854775807; got "
            "9223372036854775808",
        ),
        (
            {"line_items": [ITEM], "tax_rate_bps": False},
            "tax_rate_bps must be an integer from 0 to 9223372036854775807; got boolean",
        ),
        ({"line_items": [ITEM]}, "tax_rate_bps is required"),
    ],
)
def test_wrong_shape_is_invalid_input(raw, inputs, message):
    error = error_of(raw.call("order_totals", json.dumps(inputs).encode()))
    assert error == {"kind": "invalid_input", "message": f"order_totals: {message}"}


@pytest.mark.parametrize(
    ("items", "bps", "what"),
    [
        ([(I64_MAX, 2)], 0, "line_items[0] unit_price_cents * quantity"),
        ([(I64_MAX, 1), (1, 1)], 0, "subtotal_cents"),
        ([(0, I64_MAX), (0, 1)], 0, "item_count"),
        ([(I64_MAX // 2, 1)], 30_000, "tax_cents"),
        ([(I64_MAX, 1)], I64_MAX, "tax_cents"),
        ([(I64_MAX // 2 + 1, 1)], 10_000, "total_cents"),
    ],
)
def test_overflow_is_an_error(raw, items, bps, what):
    line_items = [{"sku": "x", "unit_price_cents": p, "quantity": q} for p, q in items]
    data = json.dumps({"line_items": line_items, "tax_rate_bps": bps}).encode()
    error = error_of(raw.call("order_totals", data))
    assert error == {
        "kind": "overflow",
        "message": f"order_totals: {what} overflows a signed 64-bit integer",
    }


def test_handle_rejects_non_objects(raw):
    assert error_of(raw.call("handle", b"[1]"))["kind"] == "invalid_input"
    assert json.loads(raw.call("handle", b'{"x": [1, {"y": null}]}')) == {"dummy": True}
    assert json.loads(raw.call("handle", b'{"panic": false}')) == {"dummy": True}
    assert json.loads(raw.call("handle", b'{"panic": 1}')) == {"dummy": True}


def test_panic_is_a_json_error(raw):
    error = error_of(raw.call("handle", b'{"panic": true}'))
    assert error["kind"] == "panic"
    assert error["message"] == (
        'handle panicked: handle: panic requested by the inputs ("panic": true)'
    )
    # The library is still usable after a panic.
    assert json.loads(raw.call("handle", b"{}")) == {"dummy": True}


def test_huge_input(raw):
    items = [{"sku": f"sku-{i:07d}", "unit_price_cents": i, "quantity": 2} for i in range(200_000)]
    data = json.dumps({"line_items": items, "tax_rate_bps": 725}).encode()
    assert len(data) > 10_000_000
    subtotal = 2 * sum(range(200_000))
    assert json.loads(raw.call("order_totals", data)) == {
        "subtotal_cents": subtotal,
        "tax_cents": (subtotal * 725 + 5000) // 10000,
        "total_cents": subtotal + (subtotal * 725 + 5000) // 10000,
        "item_count": 400_000,
    }
    huge_string = b'{"blob": "' + b"x" * 50_000_000 + b'"}'
    assert json.loads(raw.call("handle", huge_string)) == {"dummy": True}


def test_nul_escapes_never_reach_the_answer_raw(raw):
    # NUL escaped in the input is fine; the answer is complete JSON (no interior NUL cut it).
    data = (
        b'{"line_items": [{"sku": "a\\u0000b", "unit_price_cents": 1, "quantity": 1}], '
        b'"tax_rate_bps": 0}'
    )
    assert json.loads(raw.call("order_totals", data))["total_cents"] == 1
    # Input ending at an embedded NUL is read up to it: '{"a"' alone is invalid JSON.
    assert error_of(raw.call("handle", b'{"a"\x00: 1}'))["kind"] == "invalid_json"


def test_free_string_null_is_a_no_op(raw):
    for _ in range(1000):
        raw.lib.free_string(raw.ffi.NULL)


def test_concurrent_calls_from_threads(raw):
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(300):
                if (i + n) % 10 == 0:
                    assert error_of(raw.call("handle", b'{"panic": true}'))["kind"] == "panic"
                else:
                    data = json.dumps({"line_items": [ITEM] * (i % 7), "tax_rate_bps": i})
                    assert (
                        json.loads(raw.call("order_totals", data.encode()))["item_count"] == i % 7
                    )
        except BaseException as exc:  # collected for the main thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
