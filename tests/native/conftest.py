"""Fixtures of the native handler tests.

The native builds are a precondition (`scripts/build-native` runs before the tests): when
they are missing, every test here FAILS with the message that says how to build them; none
is skipped.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from cffi import FFI

from tasker.errors import NativeLibraryNotFoundError
from tasker.handlers import BUILD_HINT, NativeLibrary, find_library, load_library

CDEF = """
    char *handle(const char *json);
    char *order_totals(const char *json);
    void free_string(char *s);
"""


@pytest.fixture(scope="session")
def dummy() -> ModuleType:
    """The PyO3 module `tasker_dummy_handler`."""
    try:
        return importlib.import_module("tasker_dummy_handler")
    except ImportError as exc:
        pytest.fail(f"cannot import tasker_dummy_handler ({exc}). {BUILD_HINT}", pytrace=False)


@pytest.fixture(scope="session")
def library() -> NativeLibrary:
    """The C-ABI library, loaded the way FFIJsonHandler loads it."""
    try:
        return load_library()
    except NativeLibraryNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


class Raw:
    """The C ABI through a cffi instance of its own, with nothing of tasker in between."""

    def __init__(self) -> None:
        try:
            path = find_library()
        except NativeLibraryNotFoundError as exc:
            pytest.fail(str(exc), pytrace=False)
        self.ffi = FFI()
        self.ffi.cdef(CDEF)
        self.lib: Any = self.ffi.dlopen(str(path))

    def call(self, symbol: str, arg: Any) -> bytes:
        """Calls `symbol(arg)`, returns the answer's bytes and frees the string."""
        function: Callable[[Any], Any] = getattr(self.lib, symbol)
        pointer = function(arg)
        assert pointer != self.ffi.NULL
        try:
            return bytes(self.ffi.string(pointer))
        finally:
            self.lib.free_string(pointer)


@pytest.fixture(scope="session")
def raw() -> Raw:
    """Raw access to the C ABI."""
    return Raw()
