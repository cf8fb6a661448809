"""Sub-tasks, decided with no I/O: what a step that spawned children becomes.

A handler's `step.spawn(request, key=, wait=)` records a `Spawn` (the child's id is
handed out at once; its row is inserted with the attempt's outcome, so a failed
attempt spawns nothing). A succeeded attempt that spawned children it waits for leaves
its step `in_progress`, awaiting "children" (`tasker.core.states.AWAIT_CHILDREN`);
`settle` decides, from what the awaited children are (`Children`), when it completes
or fails: a summary, not the children's list, so a parent woken once per finished child
reads a bounded amount each time (fan-in stays linear in the children).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from tasker.core import flow
from tasker.core.states import AWAIT_CHILDREN, Status
from tasker.core.views import StepView
from tasker.errors import SubTaskError

#: A child in one of these lets its awaiting parent step complete.
CHILD_DONE = frozenset({Status.COMPLETE.value, Status.RESOLVED_MANUALLY.value})
#: A child in one of these fails its awaiting parent step for good.
CHILD_FAILED = frozenset({Status.ERROR.value, Status.CANCELLED.value})
#: A task that ends in one of these nudges the parent waiting for it.
ENDINGS = frozenset({Status.COMPLETE, Status.ERROR, Status.CANCELLED})
#: A child in one of these is still live: its awaiting parent step waits on.
CHILD_LIVE = frozenset(s.value for s in Status) - CHILD_DONE - CHILD_FAILED - {"skipped"}


@dataclass(frozen=True)
class Children:
    """What a step awaiting its children knows of them, as last read.

    Attributes:
        live: some child is still live (not done, not failed).
        failed: the first child (lowest id) that ended in error or was cancelled, as
            (task id, status), or None.
        count: how many children it awaits; counted only once none is live and none
            failed (else 0): the one read that costs as much as there are children.
        decision: for a decision step, the labels its handler chose, kept with the
            outcome that left it awaiting (`tasker.core.branches.keep`); read, like
            `count`, only once none is live and none failed (else None).
    """

    live: bool
    failed: tuple[int, str] | None = None
    count: int = 0
    decision: tuple[str, ...] | None = None

    @classmethod
    def of(cls, children: Sequence[tuple[int, str]]) -> Children:
        """The summary of some children's (task id, status), in any order."""
        failed = min(((i, s) for i, s in children if s in CHILD_FAILED), default=None)
        live = any(s not in CHILD_DONE and s not in CHILD_FAILED for _, s in children)
        return cls(live, failed, 0 if live or failed else len(children))


@dataclass(frozen=True)
class Spawn:
    """One `step.spawn` of an attempt.

    Attributes:
        key: the spawn's key (unique within the step).
        task_id: the child's id (handed out ahead, or the existing child's).
        wait: whether the step waits for the child.
        new: the child's row to insert (a `tasker.store.base.NewTask`), or None when
            a child with this key exists already (a retried step spawning it again).
    """

    key: str
    task_id: int
    wait: bool
    new: Any = None


def parent_to_wake(finish: Any, task: Mapping[str, Any]) -> int | None:
    """The parent to wake when a write ends this task and its parent's step waits for it.

    Args:
        finish: the write's `tasker.store.lease.Finish`, or None.
        task: the task's row (`parent_task_id`, `parent_waits`).
    """
    ends = finish is not None and finish.to_status in ENDINGS
    parent = task.get("parent_task_id")
    return int(parent) if ends and parent is not None and task.get("parent_waits") else None


def await_children(v: StepView, spawned: Sequence[Spawn]) -> StepView | None:
    """The step after a succeeded attempt that spawned children it waits for, else None.

    It stays `in_progress` with its results stored, awaiting its children.
    """
    if not any(s.wait for s in spawned):
        return None
    return replace(
        v,
        status=Status.IN_PROGRESS.value,
        awaiting=AWAIT_CHILDREN,
        processed_at=None,
        next_attempt_at=None,
    )


def settle(
    v: StepView, children: Children, rules: flow.Rules, now: datetime
) -> flow.Recorded | None:
    """What a step awaiting its children becomes, given what they are.

    Returns:
        The step complete once every child is done; failed for good (with its
        `on_failure`) as soon as one ended in error or was cancelled, naming it; None
        while any is still live.
    """
    if children.failed is not None:
        child, status = children.failed
        message = f"sub-task {child} ended {status}; step {v.name!r} waited for it"
        error = {**flow.error_of(SubTaskError, message), "task_id": child}
        waiting = replace(v, awaiting=None)
        return flow.failed_for_good(waiting, error, rules, now, f"SubTaskError: {message}")
    if not children.live:
        new = replace(v, status=Status.COMPLETE.value, awaiting=None, processed_at=now)
        return flow.Recorded(new, f"all {children.count} sub-task(s) done")
    return None
