"""`PyO3Handler` and the PyO3 module `tasker_dummy_handler`."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tasker.errors import NativeHandlerError, RetryableError
from tasker.handlers import PyO3Handler, is_panic

pytestmark = pytest.mark.native

ORDER = {
    "line_items": [
        {"sku": "tea", "unit_price_cents": 1999, "quantity": 2},
        {"sku": "mug", "unit_price_cents": 500, "quantity": 1},
    ],
    "tax_rate_bps": 825,
}
TOTALS = {"subtotal_cents": 4498, "tax_cents": 371, "total_cents": 4869, "item_count": 3}


def step(inputs):
    return SimpleNamespace(inputs=inputs)


def test_module_functions(dummy):
    assert dummy.handle({"a": [1, 2]}) == {"dummy": True}
    assert dummy.handle({"panic": False}) == {"dummy": True}
    assert dummy.handle({"panic": 1}) == {"dummy": True}  # only the JSON `true` panics
    assert dummy.order_totals(ORDER) == TOTALS


def test_module_panics_with_panic_exception(dummy):
    with pytest.raises(BaseException) as info:
        dummy.handle({"panic": True})
    assert is_panic(info.value)
    assert not isinstance(info.value, Exception)  # why PyO3Handler must catch it
    assert "panic requested" in str(info.value)


def test_module_bad_input_names_the_field(dummy):
    with pytest.raises(ValueError, match=r"line_items\[1\]\.quantity is required"):
        dummy.order_totals(
            {"line_items": [ORDER["line_items"][0], {"sku": "x", "unit_price_cents": 1}]}
        )
    with pytest.raises(ValueError, match="inputs must be an object; got array"):
        dummy.order_totals([ORDER])
    with pytest.raises(ValueError, match="inputs must be an object; got string"):
        dummy.handle("x")
    with pytest.raises(OverflowError, match="subtotal_cents overflows"):
        dummy.order_totals(
            {
                "line_items": [{"sku": "a", "unit_price_cents": 2**63 - 1, "quantity": 1}] * 2,
                "tax_rate_bps": 0,
            }
        )
    with pytest.raises(TypeError):
        dummy.order_totals()


def test_handler_returns_results(dummy):
    assert PyO3Handler(dummy.order_totals).handle(None, None, step(ORDER)) == TOTALS
    assert PyO3Handler(dummy.handle).handle(None, None, step(None)) == {"dummy": True}


def test_handler_turns_panic_into_native_handler_error(dummy):
    with pytest.raises(NativeHandlerError) as info:
        PyO3Handler(dummy.handle).handle(None, None, step({"panic": True}))
    assert str(info.value).startswith("handle panicked: ")
    assert info.value.details["kind"] == "panic"
    assert info.value.details["exception"] == "pyo3_runtime.PanicException"
    assert is_panic(info.value.__cause__)


def test_handler_turns_errors_into_native_handler_error(dummy):
    handler = PyO3Handler(dummy.order_totals)
    with pytest.raises(NativeHandlerError) as info:
        handler.handle(None, None, step({"line_items": "nope", "tax_rate_bps": 1}))
    assert str(info.value) == "order_totals: line_items must be an array; got string"
    assert info.value.details["kind"] == "invalid_input"
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(NativeHandlerError) as info:
        handler.handle(
            None,
            None,
            step(
                {
                    "line_items": [{"sku": "a", "unit_price_cents": 2**62, "quantity": 2}],
                    "tax_rate_bps": 0,
                }
            ),
        )
    assert info.value.details["kind"] == "overflow"


def test_handler_classifies_other_failures():
    def boom(inputs):
        raise KeyError("k")

    def not_a_dict(inputs):
        return [1]

    def retry(inputs):
        raise RetryableError("later", retry_after=5)

    def interrupt(inputs):
        raise KeyboardInterrupt

    with pytest.raises(NativeHandlerError) as info:
        PyO3Handler(boom).call({})
    assert info.value.details["kind"] == "error"
    assert str(info.value) == "boom: KeyError: 'k'"
    with pytest.raises(NativeHandlerError) as info:
        PyO3Handler(not_a_dict).call({})
    assert info.value.details["kind"] == "invalid_result"
    with pytest.raises(RetryableError):
        PyO3Handler(retry).call({})
    with pytest.raises(KeyboardInterrupt):
        PyO3Handler(interrupt).call({})
    with pytest.raises(TypeError):
        PyO3Handler("not callable")  # type: ignore[arg-type]
