"""Checking a task handler's steps form a DAG, and ordering them."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

from tasker.errors import ConfigurationError, DagCycleError


def topological_order(task_name: str, deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Order steps so that every step comes after all it depends on (Kahn's algorithm).

    Ties keep the declaration order, so the order is stable.

    Args:
        task_name: for error messages.
        deps: step name -> names it depends on, in declaration order.

    Raises:
        ConfigurationError: a dependency names no step.
        DagCycleError: the steps depend on each other in a cycle (`.cycle` is its path,
            the first step repeated at the end; a step that depends on itself: `[a, a]`).
    """
    for name, wanted in deps.items():
        unknown = [d for d in wanted if d not in deps]
        if unknown:
            raise ConfigurationError(
                f"task {task_name!r}: step {name!r} depends on unknown step(s) {unknown}"
            )
    indegree = {name: len(wanted) for name, wanted in deps.items()}
    dependents: dict[str, list[str]] = {name: [] for name in deps}
    for name, wanted in deps.items():
        for d in wanted:
            dependents[d].append(name)
    queue = deque(name for name, n in indegree.items() if n == 0)
    order: list[str] = []
    while queue:
        name = queue.popleft()
        order.append(name)
        for child in dependents[name]:
            indegree[child] -= 1
            if indegree[child] == 0:
                queue.append(child)
    if len(order) < len(deps):
        raise DagCycleError(task_name, find_cycle({n for n, k in indegree.items() if k > 0}, deps))
    return order


def find_cycle(residual: set[str], deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Find one cycle among the steps Kahn's algorithm could not order, in O(n).

    Every residual step has a dependency that is itself residual, so walking
    those dependencies must revisit a step; the walk from there is a cycle.

    Returns:
        The cycle as a closed path in dependency order: each step depends on the one
        before it, and the last is the first again (`["a", "a"]` for a self-dependency).
    """
    start = min(residual)
    seen: dict[str, int] = {}
    path: list[str] = []
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(d for d in deps[node] if d in residual)
    # The walk follows "depends on", so reverse it into dependency order.
    cycle = list(reversed(path[seen[node] :]))
    return [*cycle, cycle[0]]
