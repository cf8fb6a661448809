"""Decisions, decided once: which steps a decision step's choice skips.

No I/O here: `writes.decide` records the skips in the same fenced write as the
decision step's outcome, or, for a decision step that spawned sub-tasks it waits for,
in the write that completes it once they are done. Until then its labels are kept
with the outcome that left it awaiting them: in the details of that history row
(`keep`), read back when the step completes (`kept`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from tasker.core.states import Status
from tasker.core.views import StepView

#: The key of a history row's details that keeps a waiting decision step's labels.
KEPT = "decision"


def keep(labels: Sequence[str]) -> dict[str, Any]:
    """The history details that keep a decision step's labels while it awaits children."""
    return {KEPT: list(labels)}


def kept(details: Any) -> tuple[str, ...] | None:
    """The labels kept in a history row's details (`keep`), else None."""
    if not isinstance(details, Mapping):
        return None
    labels = details.get(KEPT)
    if not isinstance(labels, list) or not all(isinstance(lb, str) for lb in labels):
        return None
    return tuple(labels)


def said(labels: Sequence[str]) -> str:
    """The history reason's words for a decision: `decided: a, b`."""
    return f"decided: {', '.join(labels)}"


def unknown_labels(
    name: str, branches: Mapping[str, Sequence[str]], chosen: Sequence[str]
) -> str | None:
    """Why decision step `name` cannot take `chosen`, or None if every label is a branch."""
    unknown = [label for label in chosen if label not in branches]
    if not unknown:
        return None
    known = sorted(branches)
    return f"decision step {name!r} chose unknown branch(es) {unknown}; its branches: {known}"


def not_taken(
    views: Mapping[str, StepView],
    decider: str,
    branches: Mapping[str, Sequence[str]],
    chosen: Collection[str],
) -> dict[str, str]:
    """The pending steps a decision skips, each with the reason to record.

    The steps of the branches not chosen (unless a chosen branch names them too) are
    skipped; so is every step all of whose dependencies were skipped by this decision,
    transitively. A step that depends on at least one other step (a join) is not.

    Args:
        views: every step of the task, in topological order.
        decider: the decision step's name.
        branches: its `branches` (label -> step names).
        chosen: the labels its handler chose.

    Returns:
        Step name -> history reason, in topological order.
    """
    taken = {n for label in chosen for n in branches.get(label, ())}
    label_of: dict[str, str] = {}
    for label, names in branches.items():
        if label in chosen:
            continue
        for n in names:
            if n not in taken:
                label_of.setdefault(n, label)
    skipped: dict[str, str] = {}
    below: dict[str, str] = {}  # step -> the branch not taken it lies below
    for name, v in views.items():
        if v.status != Status.PENDING.value:
            continue
        if name in label_of:
            label = label_of[name]
            skipped[name] = f"branch {label!r} not taken (decision of step {decider!r})"
            below[name] = label
        elif v.depends_on and all(d in skipped for d in v.depends_on):
            labels = sorted({below[d] for d in v.depends_on})
            below[name] = labels[0]
            said = ", ".join(repr(lb) for lb in labels)
            skipped[name] = (
                f"below branch {said} not taken (decision of step {decider!r}): "
                "all its dependencies were skipped"
            )
    return skipped
