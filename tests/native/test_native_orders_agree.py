"""The three `order_totals` (pure Python, PyO3, C ABI) agree on every input, errors included."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tasker.errors import NativeHandlerError
from tasker.handlers import FFIJsonHandler, order_totals

pytestmark = pytest.mark.native

I64_MAX = 2**63 - 1

# Amounts: mostly ordinary, some at the edges of i64, some invalid.
small = st.integers(min_value=0, max_value=100_000)
edge = st.sampled_from(
    [0, 1, 2, 9999, 10_000, 2**31, 2**32, I64_MAX // 2, I64_MAX // 2 + 1, I64_MAX - 1, I64_MAX]
)
huge = st.integers(min_value=0, max_value=I64_MAX)
invalid_amount = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=I64_MAX + 1, max_value=2**100),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=1),
)
amount = st.one_of(small, small, small, edge, huge, invalid_amount)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))


@st.composite
def line_item(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 40)) == 0:
        return draw(json_scalar)  # not an object
    item: dict[str, Any] = {}
    fields = {
        "sku": st.one_of(st.text(max_size=8), st.text(max_size=8), json_scalar),
        "unit_price_cents": amount,
        "quantity": amount,
    }
    for key, strategy in fields.items():
        if draw(st.integers(0, 30)) != 0:  # now and then a field is missing
            item[key] = draw(strategy)
    if draw(st.booleans()):
        item["extra"] = draw(json_scalar)
    return item


@st.composite
def order(draw: st.DrawFn) -> Any:
    shape = draw(st.integers(0, 60))
    if shape == 0:
        return draw(st.one_of(json_scalar, st.lists(json_scalar, max_size=2)))
    inputs: dict[str, Any] = {}
    if shape != 1:
        inputs["line_items"] = (
            draw(json_scalar) if shape == 2 else draw(st.lists(line_item(), max_size=6))
        )
    if shape != 3:
        inputs["tax_rate_bps"] = draw(st.one_of(st.integers(0, 10_000), amount))
    if draw(st.booleans()):
        inputs["note"] = draw(json_scalar)
    return inputs


def valid_order() -> st.SearchStrategy[dict[str, Any]]:
    item = st.fixed_dictionaries(
        {
            "sku": st.text(max_size=8),
            "unit_price_cents": st.one_of(small, edge),
            "quantity": st.one_of(small, edge),
        }
    )
    # Rates that often land on exactly half a cent, where rounding matters.
    rate = st.one_of(small, edge, st.sampled_from([50, 150, 2500, 5000, 7500]))
    return st.fixed_dictionaries({"line_items": st.lists(item, max_size=8), "tax_rate_bps": rate})


def outcome_python(inputs: Any) -> tuple[Any, ...]:
    try:
        return ("ok", order_totals(inputs))
    except OverflowError as exc:
        return ("overflow", str(exc))
    except ValueError as exc:
        return ("invalid_input", str(exc))


def outcome_pyo3(dummy: Any, inputs: Any) -> tuple[Any, ...]:
    try:
        return ("ok", dummy.order_totals(inputs))
    except OverflowError as exc:
        return ("overflow", str(exc))
    except ValueError as exc:
        return ("invalid_input", str(exc))


FFI = FFIJsonHandler("order_totals")


def outcome_ffi(inputs: Any) -> tuple[Any, ...]:
    try:
        return ("ok", FFI.call(inputs))
    except NativeHandlerError as exc:
        assert str(exc) == exc.details["message"]
        return (exc.details["kind"], str(exc))


def comparable(outcome: tuple[Any, ...]) -> tuple[Any, ...]:
    """The outcome with the free-form end of a message ("; got ...") cut off."""
    kind, value = outcome
    return (kind, value if kind == "ok" else value.split("; got ")[0])


def assert_agree(dummy: Any, inputs: Any) -> tuple[Any, ...]:
    python, pyo3, ffi = outcome_python(inputs), outcome_pyo3(dummy, inputs), outcome_ffi(inputs)
    assert comparable(pyo3) == comparable(python), inputs
    assert comparable(ffi) == comparable(python), inputs
    return python


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs=order())
@example(inputs={"line_items": [], "tax_rate_bps": 0})
@example(  # exactly half a cent: rounds up
    inputs={
        "line_items": [{"sku": "a", "unit_price_cents": 100, "quantity": 1}],
        "tax_rate_bps": 50,
    }
)
@example(
    inputs={
        "line_items": [{"sku": "a", "unit_price_cents": I64_MAX, "quantity": 1}],
        "tax_rate_bps": 0,
    }
)
@example(
    inputs={
        "line_items": [{"sku": "a", "unit_price_cents": I64_MAX, "quantity": 1}],
        "tax_rate_bps": 1,
    }
)
@example(
    inputs={
        "line_items": [
            {"sku": "a", "unit_price_cents": 1, "quantity": I64_MAX},
            {"sku": "b", "unit_price_cents": 0, "quantity": 1},
        ],
        "tax_rate_bps": 0,
    }
)
@example(
    inputs={
        "line_items": ({"sku": "t", "unit_price_cents": 5, "quantity": 3},),
        "tax_rate_bps": 10_000,
    }
)
@example(
    inputs={"line_items": [{"sku": "a", "unit_price_cents": 2.0, "quantity": 1}], "tax_rate_bps": 0}
)
@example(
    inputs={
        "line_items": [{"sku": "a", "unit_price_cents": True, "quantity": 1}],
        "tax_rate_bps": 0,
    }
)
@example(
    inputs={
        "line_items": [{"sku": "a", "unit_price_cents": -1, "quantity": 10**40}],
        "tax_rate_bps": -5,
    }
)
def test_three_implementations_agree(dummy, inputs):
    assert_agree(dummy, inputs)


@settings(max_examples=500, deadline=None)
@given(inputs=valid_order())
def test_valid_orders_match_the_formula(dummy, inputs):
    kind, result = assert_agree(dummy, inputs)
    subtotal = sum(i["unit_price_cents"] * i["quantity"] for i in inputs["line_items"])
    count = sum(i["quantity"] for i in inputs["line_items"])
    tax = (subtotal * inputs["tax_rate_bps"] + 5000) // 10000
    fits = max(subtotal, count, subtotal + tax) <= I64_MAX and all(
        i["unit_price_cents"] * i["quantity"] <= I64_MAX for i in inputs["line_items"]
    )
    if fits:
        assert kind == "ok"
        assert result == {
            "subtotal_cents": subtotal,
            "tax_cents": tax,
            "total_cents": subtotal + tax,
            "item_count": count,
        }
    else:
        assert kind == "overflow"


def test_rounding_is_half_up():
    def tax(subtotal: int, bps: int) -> int:
        item = {"sku": "a", "unit_price_cents": subtotal, "quantity": 1}
        return order_totals({"line_items": [item], "tax_rate_bps": bps})["tax_cents"]

    assert tax(100, 50) == 1  # 0.5 cent rounds up
    assert tax(100, 49) == 0
    assert tax(4498, 825) == 371
    assert tax(0, 10_000) == 0


def test_validation_comes_before_arithmetic(dummy):
    # An overflowing first item and an invalid later one: every implementation reports the
    # invalid input, since all of them validate everything before computing.
    inputs = {
        "line_items": [
            {"sku": "a", "unit_price_cents": I64_MAX, "quantity": 2},
            {"sku": "b", "unit_price_cents": 1},
        ],
        "tax_rate_bps": 0,
    }
    assert assert_agree(dummy, inputs) == (
        "invalid_input",
        "order_totals: line_items[1].quantity is required",
    )


def test_lone_surrogates_only_the_json_path_rejects(dummy):
    # Known difference: a lone surrogate cannot be JSON text (serde_json rejects "\ud800"),
    # so the C ABI refuses the whole input, while the in-process implementations accept any
    # Python str as a sku. (Hypothesis' text() never draws surrogates.)
    inputs = {
        "line_items": [{"sku": "\ud800", "unit_price_cents": 1, "quantity": 1}],
        "tax_rate_bps": 0,
    }
    assert outcome_python(inputs) == outcome_pyo3(dummy, inputs)
    assert outcome_python(inputs)[0] == "ok"
    assert outcome_ffi(inputs)[0] == "invalid_json"


def test_ints_beyond_f64_are_errors_everywhere(dummy):
    # Known difference of kind (not of error-vs-ok): serde_json cannot hold a 400-digit
    # number, so the C ABI calls it invalid JSON where the others say invalid input.
    inputs = {"line_items": [], "tax_rate_bps": 10**400}
    assert outcome_python(inputs)[0] == outcome_pyo3(dummy, inputs)[0] == "invalid_input"
    assert outcome_ffi(inputs)[0] == "invalid_json"
