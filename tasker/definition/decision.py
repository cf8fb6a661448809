"""`Decision`: what a decision step's handler returns to choose its branches."""

from __future__ import annotations

from typing import Any


class Decision:
    """The branches a decision step takes (`StepTemplate(branches=...)`).

    Return it from the handler of a step with `branches`: the steps of the branches
    not named become `skipped`, and so, transitively, does every step all of whose
    dependencies were skipped that way. A decision step that also spawns sub-tasks it
    waits for (`step.spawn(..., wait=True)`) keeps the decision with its outcome and
    applies it when it completes, once those are done. A `for_each` step cannot be a
    decision step (refused by `StepTemplate`).

    Args:
        *labels: the labels of the branches to take (keys of the step's `branches`).
        results: the decision step's own results (a JSON object, or None).

    Attributes:
        labels: the labels, in the order given (duplicates dropped).
        results: as given.
    """

    __slots__ = ("labels", "results")

    def __init__(self, *labels: str, results: dict[str, Any] | None = None) -> None:
        self.labels: tuple[str, ...] = tuple(dict.fromkeys(labels))
        self.results = results

    def __repr__(self) -> str:
        args = ", ".join(repr(label) for label in self.labels)
        return f"Decision({args}, results={self.results!r})"
