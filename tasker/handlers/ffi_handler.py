"""`FFIJsonHandler`: a step handler around a JSON symbol of the C-ABI handler library."""

from __future__ import annotations

import os
from typing import Any

from tasker.errors import ConfigurationError, NativeHandlerError

from ._json_codec import decode, encode
from ._types import JsonObject, StepLike
from .ffi_library import NativeLibrary, is_handler_symbol, load_library


class FFIJsonHandler:
    """A step handler that sends the step's inputs as JSON to a C-ABI symbol.

    `StepTemplate(name="totals", handler=FFIJsonHandler("order_totals"))` stores the JSON
    object the library's `order_totals` returns as the step's results. The library is
    loaded on the first call (once per process, see `load_library`), and every string it
    returns is released with its `free_string`.

    Attributes:
        symbol: the exported function, `char *symbol(const char *json)`.
        library: the library as given (a path, a loaded `NativeLibrary`, or None to look it
            up from `$TASKER_FFI_LIBRARY`, then the workspace's `target/release`).
    """

    def __init__(
        self,
        symbol: str = "handle",
        library: str | os.PathLike[str] | NativeLibrary | None = None,
    ) -> None:
        if not is_handler_symbol(symbol):
            raise ConfigurationError(f"FFIJsonHandler: not a JSON handler symbol: {symbol!r}")
        self.symbol = symbol
        self.library = library
        self._loaded = library if isinstance(library, NativeLibrary) else None
        self._path = None if isinstance(library, NativeLibrary) else library

    def __repr__(self) -> str:
        return f"FFIJsonHandler({self.symbol!r}, library={self.library!r})"

    def load(self) -> NativeLibrary:
        """Loads the library now (instead of on the first call) and checks the symbol.

        Raises:
            NativeLibraryNotFoundError: the library is not built, cannot be loaded, or lacks
                the symbol; the message says how to build it.
        """
        if self._loaded is None:
            self._loaded = load_library(self._path)
        self._loaded.function(self.symbol)
        return self._loaded

    def call(self, inputs: Any) -> JsonObject:
        """Calls the symbol on `inputs` and returns the JSON object it answers.

        Args:
            inputs: a JSON-serialisable value (the step's inputs, normally a dict).

        Returns:
            The result object.

        Raises:
            NativeHandlerError: the inputs are not JSON (`details["kind"] ==
                "invalid_input"`), or the library answered an error object (`details` is
                that object, e.g. `{"kind": "panic", "message": ...}`) or something that is
                not a JSON object (`"invalid_result"`).
            NativeLibraryNotFoundError: the library is not built or cannot be loaded.
        """
        library = self._loaded or self.load()
        try:
            payload = encode(inputs).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            message = f"{self.symbol}: inputs are not JSON-serialisable: {exc}"
            raise NativeHandlerError(
                message, {"kind": "invalid_input", "message": message}
            ) from exc
        text = library.call(self.symbol, payload)
        try:
            answer = decode(text)
        except ValueError as exc:
            message = f"{self.symbol} answered invalid JSON ({exc}): {text[:200]!r}"
            raise NativeHandlerError(
                message, {"kind": "invalid_result", "message": message}
            ) from exc
        if not isinstance(answer, dict):
            message = f"{self.symbol} answered {type(answer).__name__}, not a JSON object"
            raise NativeHandlerError(message, {"kind": "invalid_result", "message": message})
        if "error" in answer:
            error = answer["error"]
            details = error if isinstance(error, dict) else {"kind": "error", "message": str(error)}
            raise NativeHandlerError(str(details.get("message", error)), details)
        return answer

    def handle(self, task: object, sequence: object, step: StepLike) -> JsonObject:
        """Runs the symbol on `step.inputs` (None counts as `{}`) and returns its results.

        Args:
            task: the engine's task (unused).
            sequence: the engine's step sequence (unused).
            step: the step being run.

        Raises:
            NativeHandlerError: as for `call`.
            NativeLibraryNotFoundError: as for `call`.
        """
        inputs = step.inputs
        return self.call({} if inputs is None else inputs)
