"""Shapes the native step handlers rely on, without importing the engine."""

from __future__ import annotations

from typing import Any, Protocol

JsonObject = dict[str, Any]
"""A JSON object as Python sees it: what the handlers take and return."""


class StepLike(Protocol):
    """The one thing a native step handler reads from the engine's step: its inputs."""

    @property
    def inputs(self) -> Any:
        """The step's inputs (a JSON object; the task context unless the step says otherwise)."""
        ...
