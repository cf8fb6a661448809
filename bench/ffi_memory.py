"""Resident memory after 10,000 vs 1,000,000 cffi calls through FFIJsonHandler.

Run after `scripts/build-native`:  .venv/bin/python bench/ffi_memory.py [calls]

Every call goes through the wrapper, which frees each returned string with `free_string`;
one call in ten is an error answer (bad input), so that path is exercised too. A leak of
even one small string per call would show as tens of MB between the two measurements.
"""

from __future__ import annotations

import os
import resource
import sys
import time

from tasker.errors import NativeHandlerError
from tasker.handlers import FFIJsonHandler

PAGE = os.sysconf("SC_PAGE_SIZE")
ORDER = {
    "line_items": [{"sku": "SKU-000001-BLUE", "unit_price_cents": 1999, "quantity": 2}],
    "tax_rate_bps": 825,
}
BAD = {"line_items": [{"sku": "SKU-1", "unit_price_cents": -1, "quantity": 2}], "tax_rate_bps": 1}


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def run(handler: FFIJsonHandler, start: int, stop: int) -> int:
    errors = 0
    for i in range(start, stop):
        if i % 10 == 0:
            try:
                handler.call(BAD)
            except NativeHandlerError:
                errors += 1
        else:
            handler.call(ORDER)
    return errors


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    handler = FFIJsonHandler("order_totals")
    started = time.perf_counter()
    errors = run(handler, 0, 10_000)
    after_10k = rss_bytes()
    errors += run(handler, 10_000, total)
    after_all = rss_bytes()
    elapsed = time.perf_counter() - started
    diff = after_all - after_10k
    mib = 1024 * 1024
    print(
        f"calls: {total:,} ({errors:,} of them error answers), {elapsed:.1f} s, "
        f"{elapsed / total * 1e6:.2f} µs/call"
    )
    print(f"RSS after 10,000 calls:   {after_10k / mib:8.2f} MiB")
    print(f"RSS after {total:,} calls: {after_all / mib:8.2f} MiB")
    print(
        f"difference:               {diff / mib:8.2f} MiB ({diff / max(total - 10_000, 1):.3f} "
        "bytes per call)"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"peak RSS (ru_maxrss):     {peak / mib:8.2f} MiB")
    verdict = "OK: flat" if abs(diff) < 4 * mib else "LEAK? grew by more than 4 MiB"
    print(verdict)
    if abs(diff) >= 4 * mib:
        sys.exit(1)


if __name__ == "__main__":
    main()
