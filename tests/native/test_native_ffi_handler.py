"""`FFIJsonHandler` and the loading of the C-ABI library."""

from __future__ import annotations

import contextlib
import shutil
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from tasker.errors import ConfigurationError, NativeHandlerError, NativeLibraryNotFoundError
from tasker.handlers import (
    LIBRARY_ENV,
    FFIJsonHandler,
    NativeLibrary,
    ffi_library,
    find_library,
    load_library,
)

pytestmark = pytest.mark.native

ORDER = {
    "line_items": [{"sku": "tea", "unit_price_cents": 1999, "quantity": 2}],
    "tax_rate_bps": 825,
}


def step(inputs):
    return SimpleNamespace(inputs=inputs)


def test_handle_and_order_totals(library):
    assert FFIJsonHandler().handle(None, None, step({"x": 1})) == {"dummy": True}
    assert FFIJsonHandler().handle(None, None, step(None)) == {"dummy": True}
    assert FFIJsonHandler("order_totals").handle(None, None, step(ORDER)) == {
        "subtotal_cents": 3998,
        "tax_cents": 330,
        "total_cents": 4328,
        "item_count": 2,
    }


def test_panic_is_a_native_handler_error(library):
    with pytest.raises(NativeHandlerError) as info:
        FFIJsonHandler().handle(None, None, step({"panic": True}))
    assert info.value.details["kind"] == "panic"
    assert "panicked" in str(info.value)


def test_error_object_becomes_native_handler_error(library):
    with pytest.raises(NativeHandlerError) as info:
        FFIJsonHandler("order_totals").call({"line_items": [{"sku": "a"}], "tax_rate_bps": 1})
    assert info.value.details == {
        "kind": "invalid_input",
        "message": "order_totals: line_items[0].unit_price_cents is required",
    }
    assert str(info.value) == info.value.details["message"]


@pytest.mark.parametrize("inputs", [{"x": object()}, {"x": float("nan")}, {"x": {1, 2}}])
def test_inputs_that_are_not_json(library, inputs):
    with pytest.raises(NativeHandlerError) as info:
        FFIJsonHandler().call(inputs)
    assert info.value.details["kind"] == "invalid_input"
    assert "not JSON-serialisable" in str(info.value)


def test_bad_symbols():
    with pytest.raises(ConfigurationError):
        FFIJsonHandler("free_string")
    with pytest.raises(ConfigurationError):
        FFIJsonHandler("not a symbol")
    with pytest.raises(NativeLibraryNotFoundError, match="no symbol 'no_such_symbol'"):
        FFIJsonHandler("no_such_symbol").load()


def test_missing_library_says_how_to_build(tmp_path, monkeypatch):
    missing = tmp_path / "libnothing.so"
    with pytest.raises(NativeLibraryNotFoundError, match="scripts/build-native") as info:
        FFIJsonHandler(library=missing).call({})
    assert str(missing) in str(info.value)
    assert "cargo build --release -p tasker_ffi_handler" in str(info.value)

    monkeypatch.setenv(LIBRARY_ENV, str(missing))
    with pytest.raises(NativeLibraryNotFoundError, match=LIBRARY_ENV):
        FFIJsonHandler().call({})


def test_nothing_built_anywhere(tmp_path, monkeypatch):
    monkeypatch.delenv(LIBRARY_ENV, raising=False)
    monkeypatch.setattr(ffi_library, "candidate_paths", lambda: [tmp_path / "a.so"])
    with pytest.raises(NativeLibraryNotFoundError, match=r"not found .*scripts/build-native"):
        find_library()


def test_not_a_library(tmp_path):
    bogus = tmp_path / "libbogus.so"
    bogus.write_text("not ELF")
    with pytest.raises(NativeLibraryNotFoundError, match="cannot load"):
        load_library(bogus)


def test_lookup_order(library, tmp_path, monkeypatch):
    # Found from the workspace build relative to the package, whatever the current directory.
    monkeypatch.delenv(LIBRARY_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_library() == library.path
    # The environment variable wins over the build, `library=` wins over both.
    copy = tmp_path / "libcopy.so"
    shutil.copy(library.path, copy)
    monkeypatch.setenv(LIBRARY_ENV, str(copy))
    assert find_library() == copy.resolve()
    assert find_library(library.path) == library.path


def test_loaded_once_per_path_and_thread_safe(library, tmp_path, monkeypatch):
    copy = tmp_path / "libonce.so"
    shutil.copy(library.path, copy)
    opened: list[str] = []
    real_dlopen = ffi_library._FFI.dlopen

    def counting_dlopen(name: str, *args: Any) -> Any:
        opened.append(name)
        return real_dlopen(name, *args)

    monkeypatch.setattr(ffi_library._FFI, "dlopen", counting_dlopen)
    barrier = threading.Barrier(8)
    results: list[NativeLibrary] = []

    def load() -> None:
        barrier.wait()
        results.append(load_library(copy))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert opened == [str(copy.resolve())]
    assert len({id(r) for r in results}) == 1
    assert FFIJsonHandler(library=copy).call({}) == {"dummy": True}
    assert opened == [str(copy.resolve())]


class CountingLib:
    """Wraps the real cffi library and logs every string returned and freed."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        self.events: list[tuple[str, int]] = []

    def _wrap(self, name: str) -> Any:
        function = getattr(self._lib, name)

        def call(arg: bytes) -> Any:
            pointer = function(arg)
            self.events.append(("returned", int(ffi_library._FFI.cast("uintptr_t", pointer))))
            return pointer

        return call

    def __getattr__(self, name: str) -> Any:
        return self._wrap(name)

    def free_string(self, pointer: Any) -> None:
        self.events.append(("freed", int(ffi_library._FFI.cast("uintptr_t", pointer))))
        self._lib.free_string(pointer)


def test_every_returned_string_is_freed_exactly_once(library):
    counting = CountingLib(library.lib)
    native = NativeLibrary(library.path, counting)
    calls = [
        ("handle", {}),
        ("handle", {"panic": True}),
        ("handle", []),
        ("order_totals", ORDER),
        ("order_totals", {}),
        ("order_totals", {"line_items": 3}),
        (
            "order_totals",
            {
                "line_items": [{"sku": "a", "unit_price_cents": 2**63 - 1, "quantity": 2}],
                "tax_rate_bps": 0,
            },
        ),
    ] * 50
    for symbol, inputs in calls:
        with contextlib.suppress(NativeHandlerError):
            FFIJsonHandler(symbol, library=native).call(inputs)
    assert len(counting.events) == 2 * len(calls)
    # Strictly alternating: each string is freed before the next call, by its own pointer.
    for returned, freed in zip(counting.events[::2], counting.events[1::2], strict=True):
        assert returned[0] == "returned" and freed[0] == "freed"
        assert returned[1] == freed[1] != 0
