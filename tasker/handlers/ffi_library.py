"""Finding and loading the C-ABI handler library (`libtasker_ffi_handler.so`) with cffi.

The library is opened once per process and path, in cffi's ABI mode (`ffi.dlopen`, no
compiler needed). Its contract (see `rust/ffi_handler/src/lib.rs`): each handler symbol is
`char *symbol(const char *json)`, takes a NUL-terminated UTF-8 JSON text and returns a new
JSON text that the caller must release exactly once with `void free_string(char *)`. Errors
come back as `{"error": {"kind": ..., "message": ...}}`.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cffi import FFI

from tasker.errors import NativeHandlerError, NativeLibraryNotFoundError

LIBRARY_ENV = "TASKER_FFI_LIBRARY"
"""Environment variable naming the library file, used when no `library=` is given."""

CRATE = "tasker_ffi_handler"
"""The Cargo package (and library) name of the C-ABI handlers."""

BUILD_HINT = (
    "Build the native handlers with `scripts/build-native` from the repository root "
    f"(or `cargo build --release -p {CRATE}` for this library alone), "
    f"or set {LIBRARY_ENV} to the path of a built library."
)
"""How to build the native handlers; part of every "not found" message."""

_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FFI = FFI()
_FFI.cdef(
    """
    void free_string(char *s);
    char *handle(const char *json);
    char *order_totals(const char *json);
    """
)
_DECLARED: set[str] = {"free_string", "handle", "order_totals"}
_LOADED: dict[Path, NativeLibrary] = {}
_LOCK = threading.Lock()


def is_handler_symbol(symbol: object) -> bool:
    """Tells whether `symbol` can name a JSON handler: a C identifier, not `free_string`."""
    return isinstance(symbol, str) and bool(_SYMBOL.fullmatch(symbol)) and symbol != "free_string"


def library_filename() -> str:
    """Returns the platform's file name of the library (`libtasker_ffi_handler.so` on Linux)."""
    if sys.platform == "win32":
        return f"{CRATE}.dll"
    if sys.platform == "darwin":
        return f"lib{CRATE}.dylib"
    return f"lib{CRATE}.so"


def candidate_paths() -> list[Path]:
    """Returns where the library is looked for when neither `library=` nor the env names it.

    In order: `$CARGO_TARGET_DIR/release`, the `target/release` of the workspace this
    package's source lives in (the repository root), and `target/release` under the
    current directory.
    """
    name = library_filename()
    dirs = []
    if target := os.environ.get("CARGO_TARGET_DIR"):
        dirs.append(Path(target) / "release")
    dirs.append(Path(__file__).resolve().parents[2] / "target" / "release")
    dirs.append(Path.cwd() / "target" / "release")
    unique = dict.fromkeys(d / name for d in dirs)
    return list(unique)


def _named(path: Path, source: str) -> Path:
    if not path.is_file():
        raise NativeLibraryNotFoundError(
            f"native handler library {str(path)!r} (from {source}) does not exist. " + BUILD_HINT
        )
    return path.resolve()


def find_library(library: str | os.PathLike[str] | None = None) -> Path:
    """Locates the library file: `library`, else `$TASKER_FFI_LIBRARY`, else the build.

    Args:
        library: an explicit path; wins over everything else.

    Returns:
        The absolute path of an existing file.

    Raises:
        NativeLibraryNotFoundError: the named file does not exist, or no build was found;
            the message says where it looked and how to build it.
    """
    if library is not None:
        return _named(Path(library), "library=")
    if env := os.environ.get(LIBRARY_ENV):
        return _named(Path(env), LIBRARY_ENV)
    candidates = candidate_paths()
    for path in candidates:
        if path.is_file():
            return path.resolve()
    looked = ", ".join(str(p) for p in candidates)
    raise NativeLibraryNotFoundError(
        f"native handler library {library_filename()} not found (looked in: {looked}). "
        + BUILD_HINT
    )


class NativeLibrary:
    """A loaded C-ABI handler library: calls a JSON symbol and frees what it returns.

    Get one with `load_library`, which opens each file once per process.

    Attributes:
        path: the library file.
        lib: the cffi library object (or any object with the same functions).
    """

    def __init__(self, path: Path, lib: Any) -> None:
        self.path = path
        self.lib = lib
        self._functions: dict[str, Callable[[bytes], Any]] = {}

    def function(self, symbol: str) -> Callable[[bytes], Any]:
        """Returns the C function `char *symbol(const char *)`, declaring it on first use.

        Args:
            symbol: the exported name, a C identifier other than `free_string`.

        Raises:
            ValueError: `symbol` is not a C identifier, or is `free_string`.
            NativeLibraryNotFoundError: the library does not export `symbol`.
        """
        found = self._functions.get(symbol)
        if found is not None:
            return found
        if not is_handler_symbol(symbol):
            raise ValueError(f"not a JSON handler symbol: {symbol!r}")
        with _LOCK:
            if symbol not in _DECLARED:
                _FFI.cdef(f"char *{symbol}(const char *json);")
                _DECLARED.add(symbol)
        try:
            function: Callable[[bytes], Any] = getattr(self.lib, symbol)
        except AttributeError as exc:
            raise NativeLibraryNotFoundError(
                f"native handler library {self.path} has no symbol {symbol!r}: {exc}. " + BUILD_HINT
            ) from exc
        self._functions[symbol] = function
        return function

    def call(self, symbol: str, payload: bytes) -> bytes:
        """Calls `symbol` on a JSON text and returns its answer, freeing the returned string.

        Args:
            symbol: the exported handler name.
            payload: UTF-8 JSON (without NUL bytes; cffi appends the terminating NUL).

        Returns:
            The JSON text the library returned (a result or an error object).

        Raises:
            NativeHandlerError: the library returned NULL (it never should).
            NativeLibraryNotFoundError: the library does not export `symbol`.
        """
        pointer = self.function(symbol)(payload)
        if pointer == _FFI.NULL:
            message = f"native handler {symbol} returned NULL"
            raise NativeHandlerError(message, {"kind": "null_result", "message": message})
        try:
            text: bytes = _FFI.string(pointer)
        finally:
            self.lib.free_string(pointer)
        return text


def load_library(library: str | os.PathLike[str] | None = None) -> NativeLibrary:
    """Finds (see `find_library`) and opens the library, once per path per process.

    Thread-safe: concurrent first calls open the file once.

    Args:
        library: an explicit path; else `$TASKER_FFI_LIBRARY`, else the workspace build.

    Returns:
        The shared `NativeLibrary` for that file.

    Raises:
        NativeLibraryNotFoundError: the file is missing or cannot be loaded.
    """
    path = find_library(library)
    loaded = _LOADED.get(path)
    if loaded is not None:
        return loaded
    with _LOCK:
        loaded = _LOADED.get(path)
        if loaded is None:
            try:
                lib = _FFI.dlopen(str(path))
            except OSError as exc:
                raise NativeLibraryNotFoundError(
                    f"cannot load native handler library {path}: {exc}. " + BUILD_HINT
                ) from exc
            loaded = _LOADED[path] = NativeLibrary(path, lib)
    return loaded
