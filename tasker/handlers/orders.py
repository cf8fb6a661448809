"""The pure-Python reference of `order_totals`, the twin of the Rust implementations.

The rules and every message are those of `rust/ffi_handler/src/orders.rs`:

* Validation first, in this order: `inputs` is a dict; `line_items` is present and a list
  (or tuple); each item, in order, is a dict with `sku` (a str), `unit_price_cents` and
  `quantity`; then `tax_rate_bps`. Unknown keys are ignored; an empty order is fine.
* Every amount is an `int` from 0 to 2**63 - 1: `bool`, `float` (even `2.0`), negative and
  larger numbers are invalid input (`ValueError`).
* Then the arithmetic, item by item, each result checked against the signed 64-bit range:
  `unit_price_cents * quantity`, the running `subtotal_cents`, the running `item_count`, then
  `tax_cents = (subtotal_cents * tax_rate_bps + 5000) // 10000` and
  `total_cents = subtotal_cents + tax_cents`. The first that does not fit raises
  `OverflowError` naming it.

The C-ABI path sees the inputs as JSON text, so it also refuses (as `invalid_json`) what
JSON cannot carry and the other two accept or call invalid input: lone surrogates in any
string, and integers too large for a double (309 digits and more).
"""

from __future__ import annotations

from typing import Any

I64_MAX = 2**63 - 1
"""The largest amount or total any implementation accepts or returns."""

_FUNCTION = "order_totals"
_AMOUNT = f"an integer from 0 to {I64_MAX}"


def describe(value: object) -> str:
    """Describes a value in an error message the way the Rust implementations do.

    Args:
        value: any value found in the inputs.

    Returns:
        The JSON type name (`"string"`, `"array"`, ...), or the number itself for numbers.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _wrong(path: str, expected: str, value: object) -> ValueError:
    return ValueError(f"{_FUNCTION}: {path} must be {expected}; got {describe(value)}")


def _get(mapping: dict[Any, Any], key: str, path: str) -> object:
    if key not in mapping:
        raise ValueError(f"{_FUNCTION}: {path} is required")
    return mapping[key]


def _amount(mapping: dict[Any, Any], key: str, path: str) -> int:
    value = _get(mapping, key, path)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= I64_MAX:
        raise _wrong(path, _AMOUNT, value)
    return int(value)


def _line_items(inputs: dict[Any, Any]) -> list[tuple[int, int]]:
    items = _get(inputs, "line_items", "line_items")
    if not isinstance(items, (list, tuple)):
        raise _wrong("line_items", "an array", items)
    validated = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _wrong(f"line_items[{index}]", "an object", item)
        sku = _get(item, "sku", f"line_items[{index}].sku")
        if not isinstance(sku, str):
            raise _wrong(f"line_items[{index}].sku", "a string", sku)
        price = _amount(item, "unit_price_cents", f"line_items[{index}].unit_price_cents")
        quantity = _amount(item, "quantity", f"line_items[{index}].quantity")
        validated.append((price, quantity))
    return validated


def _checked(value: int, what: str) -> int:
    if value > I64_MAX:
        raise OverflowError(f"{_FUNCTION}: {what} overflows a signed 64-bit integer")
    return value


def order_totals(inputs: object) -> dict[str, int]:
    """Computes the totals of an order.

    Args:
        inputs: `{"line_items": [{"sku", "unit_price_cents", "quantity"}], "tax_rate_bps"}`.

    Returns:
        `{"subtotal_cents", "tax_cents", "total_cents", "item_count"}`, where
        `tax_cents = (subtotal_cents * tax_rate_bps + 5000) // 10000` and `item_count` is the
        sum of the quantities.

    Raises:
        ValueError: the inputs have the wrong shape; the message names the first bad field.
        OverflowError: a product or total does not fit a signed 64-bit integer.
    """
    if not isinstance(inputs, dict):
        raise ValueError(f"{_FUNCTION}: inputs must be an object; got {describe(inputs)}")
    items = _line_items(inputs)
    tax_rate_bps = _amount(inputs, "tax_rate_bps", "tax_rate_bps")
    subtotal_cents = 0
    item_count = 0
    for index, (price, quantity) in enumerate(items):
        line = _checked(price * quantity, f"line_items[{index}] unit_price_cents * quantity")
        subtotal_cents = _checked(subtotal_cents + line, "subtotal_cents")
        item_count = _checked(item_count + quantity, "item_count")
    tax_cents = _checked((subtotal_cents * tax_rate_bps + 5000) // 10000, "tax_cents")
    total_cents = _checked(subtotal_cents + tax_cents, "total_cents")
    return {
        "subtotal_cents": subtotal_cents,
        "tax_cents": tax_cents,
        "total_cents": total_cents,
        "item_count": item_count,
    }
