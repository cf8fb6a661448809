"""Per-call cost of `order_totals`: pure Python, the PyO3 module and the cffi JSON library.

Run after `scripts/build-native`:  .venv/bin/python bench/native_calls.py [--quick]

For a small order (~100 bytes of JSON) and a large one (~100 KB), each implementation runs
in a tight loop; the best of several rounds is reported as the mean time per call.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import tasker_dummy_handler

from tasker.handlers import FFIJsonHandler, PyO3Handler, load_library, order_totals
from tasker.handlers._json_codec import decode, encode
from tasker.handlers.ffi_library import _FFI as ffi


def make_order(items: int) -> dict[str, Any]:
    return {
        "line_items": [
            {"sku": f"SKU-{i:06d}-BLUE", "unit_price_cents": 1999 + i, "quantity": 1 + i % 5}
            for i in range(items)
        ],
        "tax_rate_bps": 825,
    }


def per_call_ns(fn: Callable[[], Any], calls: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


def main() -> None:
    quick = "--quick" in sys.argv
    small, large = make_order(1), make_order(1300)
    sizes = {"small": small, "large": large}
    calls = {"small": 20_000 if quick else 200_000, "large": 200 if quick else 2_000}
    payloads = {k: json.dumps(v).encode() for k, v in sizes.items()}

    native = load_library()
    lib = native.lib
    pyo3_totals = tasker_dummy_handler.order_totals
    pyo3_handler = PyO3Handler(tasker_dummy_handler.order_totals)
    ffi_handler = FFIJsonHandler("order_totals")

    def raw_cffi(payload: bytes) -> bytes:
        pointer = lib.order_totals(payload)
        try:
            return bytes(ffi.string(pointer))
        finally:
            lib.free_string(pointer)

    answers = {k: raw_cffi(p) for k, p in payloads.items()}

    def noop(order: dict[str, Any]) -> None:
        return None

    cases: list[tuple[str, Callable[[str], Callable[[], Any]]]] = [
        ("baseline: an empty Python function call", lambda k: lambda: noop(sizes[k])),
        ("pure Python reference", lambda k: lambda: order_totals(sizes[k])),
        ("PyO3 module (dict in, dict out)", lambda k: lambda: pyo3_totals(sizes[k])),
        ("PyO3Handler.call", lambda k: lambda: pyo3_handler.call(sizes[k])),
        (
            "FFIJsonHandler.call (encode, call, free, decode)",
            lambda k: lambda: ffi_handler.call(sizes[k]),
        ),
        ("cffi raw (bytes in, bytes out, free)", lambda k: lambda: raw_cffi(payloads[k])),
        ("  part: encode inputs (cached C encoder)", lambda k: lambda: encode(sizes[k]).encode()),
        ("  part: decode answer (raw_decode)", lambda k: lambda: decode(answers[k])),
        (
            "  for comparison: json.dumps(inputs).encode()",
            lambda k: lambda: json.dumps(sizes[k]).encode(),
        ),
        ("  for comparison: json.loads(answer)", lambda k: lambda: json.loads(answers[k])),
    ]

    # The implementations agree on both orders before anything is timed.
    for order in sizes.values():
        expected = order_totals(order)
        assert tasker_dummy_handler.order_totals(order) == expected
        assert ffi_handler.call(order) == expected

    print(f"small order: {len(payloads['small'])} bytes of JSON, 1 line item")
    print(
        f"large order: {len(payloads['large'])} bytes of JSON, "
        f"{len(large['line_items'])} line items"
    )
    print()
    print(f"| {'implementation':<48} | {'small (ns/call)':>15} | {'large (µs/call)':>15} |")
    print(f"|{'-' * 50}|{'-' * 16}:|{'-' * 16}:|")
    for name, make in cases:
        small_ns = per_call_ns(make("small"), calls["small"])
        large_ns = per_call_ns(make("large"), calls["large"])
        print(f"| {name:<48} | {small_ns:>15,.0f} | {large_ns / 1000:>15,.1f} |")


if __name__ == "__main__":
    main()
