"""Native (Rust) step handlers, and the pure-Python reference they must agree with.

* `PyO3Handler(function)`: calls a PyO3 extension function, such as
  `tasker_dummy_handler.order_totals`, on the step's inputs.
* `FFIJsonHandler(symbol="handle", library=None)`: sends the inputs as JSON to a symbol of
  the C-ABI library `libtasker_ffi_handler.so`, loaded with cffi.
* `order_totals(inputs)`: the pure-Python reference of the native `order_totals`.

Both handlers turn a Rust error or panic into `tasker.errors.NativeHandlerError`, so a
failing native handler is a step error, never a crashed worker. Build the native code with
`scripts/build-native`.
"""

from __future__ import annotations

from .ffi_handler import FFIJsonHandler
from .ffi_library import BUILD_HINT, LIBRARY_ENV, NativeLibrary, find_library, load_library
from .orders import order_totals
from .pyo3_handler import PyO3Handler, is_panic

__all__ = [
    "BUILD_HINT",
    "LIBRARY_ENV",
    "FFIJsonHandler",
    "NativeLibrary",
    "PyO3Handler",
    "find_library",
    "is_panic",
    "load_library",
    "order_totals",
]
