"""`PyO3Handler`: a step handler around a function of a PyO3 extension module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tasker.errors import NativeHandlerError, TaskerError

from ._types import JsonObject, StepLike


def is_panic(exc: BaseException) -> bool:
    """Tells whether `exc` is a Rust panic surfaced by PyO3 (`pyo3_runtime.PanicException`).

    Every PyO3 module has its own `PanicException` class (a `BaseException`), so it is
    recognised by name rather than by identity.

    Args:
        exc: any exception.
    """
    return any(
        cls.__name__ == "PanicException" and cls.__module__ == "pyo3_runtime"
        for cls in type(exc).__mro__
    )


def error_kind(exc: BaseException) -> str:
    """Classifies an exception of a native function like the C ABI's error `kind`.

    Args:
        exc: what the native function raised.

    Returns:
        `"panic"`, `"overflow"` (OverflowError), `"invalid_input"` (ValueError, TypeError)
        or `"error"`.
    """
    if is_panic(exc):
        return "panic"
    if isinstance(exc, OverflowError):
        return "overflow"
    if isinstance(exc, (ValueError, TypeError)):
        return "invalid_input"
    return "error"


class PyO3Handler:
    """A step handler that calls a native function on the step's inputs.

    `StepTemplate(name="totals", handler=PyO3Handler(tasker_dummy_handler.order_totals))`
    stores what `order_totals(step.inputs)` returns as the step's results.

    Attributes:
        function: the native function, `(inputs: dict) -> dict`.
        name: its name, used in error messages.
    """

    def __init__(self, function: Callable[[JsonObject], Any]) -> None:
        if not callable(function):
            raise TypeError(f"PyO3Handler needs a callable, got {function!r}")
        self.function = function
        self.name: str = getattr(function, "__name__", repr(function))

    def __repr__(self) -> str:
        return f"PyO3Handler({self.name})"

    def call(self, inputs: JsonObject) -> JsonObject:
        """Calls the native function and checks that it returned a dict.

        Args:
            inputs: the JSON object handed to the function.

        Returns:
            What the function returned.

        Raises:
            NativeHandlerError: the function panicked (`details["kind"] == "panic"`), raised
                (`ValueError`/`TypeError` → `"invalid_input"`, `OverflowError` →
                `"overflow"`, anything else → `"error"`) or returned something other than
                a dict (`"invalid_result"`). Errors of tasker's own tree pass through.
        """
        try:
            result = self.function(inputs)
        except TaskerError:
            raise
        except BaseException as exc:  # a panic is a BaseException
            if not isinstance(exc, Exception) and not is_panic(exc):
                raise  # KeyboardInterrupt, SystemExit, ...
            raise self._error(exc) from exc
        if not isinstance(result, dict):
            message = f"{self.name} returned {type(result).__name__}, not a dict"
            raise NativeHandlerError(message, {"kind": "invalid_result", "message": message})
        return result

    def handle(self, task: object, sequence: object, step: StepLike) -> JsonObject:
        """Runs the function on `step.inputs` (None counts as `{}`) and returns its results.

        Args:
            task: the engine's task (unused).
            sequence: the engine's step sequence (unused).
            step: the step being run.

        Raises:
            NativeHandlerError: as for `call`.
        """
        inputs = step.inputs
        return self.call({} if inputs is None else inputs)

    def _error(self, exc: BaseException) -> NativeHandlerError:
        kind = error_kind(exc)
        text = str(exc)
        if kind == "panic":
            message = f"{self.name} panicked: {text}"
        elif text.startswith(f"{self.name}:"):
            message = text
        else:
            message = f"{self.name}: {type(exc).__name__}: {text}"
        cls = type(exc)
        details = {
            "kind": kind,
            "message": text,
            "exception": f"{cls.__module__}.{cls.__qualname__}",
        }
        return NativeHandlerError(message, details)
