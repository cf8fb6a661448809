"""The FFI wrapper frees every string: resident memory stays flat over 200k calls.

The loop runs in a fresh interpreter so that the measurement is not disturbed by the other
tests. A control run calls the same library without freeing, and must grow: that proves the
measurement would catch a leak.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.native

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from tasker.errors import NativeHandlerError
    from tasker.handlers import FFIJsonHandler, load_library

    mode, calls = sys.argv[1], int(sys.argv[2])
    page = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    order = {"line_items": [{"sku": "sku-%d" % i, "unit_price_cents": 199 + i, "quantity": 2}
                            for i in range(3)], "tax_rate_bps": 825}
    bad = {"line_items": [{"sku": "a", "unit_price_cents": -1, "quantity": 1}], "tax_rate_bps": 1}
    totals, dummy = FFIJsonHandler("order_totals"), FFIJsonHandler("handle")
    lib = load_library().lib
    payload = json.dumps(order).encode()

    def step(i):
        if mode == "leak":  # the control: the same call, never freed
            lib.order_totals(payload)
        elif i % 4 == 0:
            try:
                totals.call(bad)
            except NativeHandlerError:
                pass
        elif i % 4 == 1:
            dummy.call({"k": i})
        else:
            totals.call(order)

    for i in range(20_000):  # warm up allocator and caches
        step(i)
    before = rss()
    for i in range(calls):
        step(i)
    print(json.dumps({"before": before, "after": rss()}))
    """
)


def measure(mode: str, calls: int) -> int:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, str(calls)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    sizes = json.loads(out.stdout)
    return int(sizes["after"]) - int(sizes["before"])


def test_rss_stays_flat_over_200k_calls(library):
    growth = measure("free", 200_000)
    assert growth < 2 * 1024 * 1024, f"RSS grew by {growth} bytes over 200k calls"


def test_control_without_free_does_grow(library):
    # ~70-byte answers, 200k of them, never freed: at least 10 MB more.
    growth = measure("leak", 200_000)
    assert growth > 10 * 1024 * 1024, f"the leak control grew only {growth} bytes"
