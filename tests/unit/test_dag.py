"""The DAG checks: Kahn order, unknown dependencies, cycles, big graphs."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from tasker import StepTemplate, TaskHandler
from tasker.definition.dag import find_cycle, topological_order
from tasker.definition.registry import HandlerFactory
from tasker.errors import ConfigurationError, DagCycleError


def noop(task, sequence, step):
    return {}


def assert_valid_order(order: list[str], deps: dict[str, list[str]]) -> None:
    assert sorted(order) == sorted(deps)
    position = {name: i for i, name in enumerate(order)}
    for name, wanted in deps.items():
        for d in wanted:
            assert position[d] < position[name], f"{name} ordered before its dependency {d}"


def assert_is_cycle(cycle: list[str], deps: dict[str, list[str]]) -> None:
    """A closed path: each step depends on the one before it, and the last is the first."""
    assert len(cycle) >= 2 and cycle[0] == cycle[-1]
    assert len(set(cycle)) == len(cycle) - 1
    for before, after in itertools.pairwise(cycle):
        assert before in deps[after], f"{after} does not depend on {before}"


def test_independent_steps_keep_their_declaration_order():
    deps = {"z": [], "b": [], "m": [], "a": []}
    assert topological_order("t", deps) == ["z", "b", "m", "a"]


def test_kahn_order_is_breadth_first_with_ties_in_declaration_order():
    deps = {"a": [], "b": [], "c": ["a"], "d": [], "e": ["c", "b"]}
    assert topological_order("t", deps) == ["a", "b", "d", "c", "e"]


def test_order_is_stable_whatever_order_dependencies_are_listed_in():
    one = {"root": [], "x": ["root"], "y": ["root"], "join": ["x", "y"]}
    two = {"root": [], "x": ["root"], "y": ["root"], "join": ["y", "x"]}
    assert topological_order("t", one) == topological_order("t", two) == ["root", "x", "y", "join"]


def test_a_step_declared_before_its_dependency_is_ordered_after_it():
    deps = {"ship": ["charge"], "charge": ["validate"], "validate": []}
    assert topological_order("t", deps) == ["validate", "charge", "ship"]


def test_an_unknown_dependency_is_named_with_the_step_that_wants_it():
    with pytest.raises(ConfigurationError) as info:
        topological_order("orders", {"a": [], "b": ["a", "ghost"]})
    assert not isinstance(info.value, DagCycleError)
    message = str(info.value)
    assert "'ghost'" in message and "'b'" in message and "'orders'" in message


def test_a_cycle_is_reported_with_exactly_its_steps_even_with_nodes_hanging_off_it():
    deps = {
        "upstream": [],
        "a": ["upstream", "c"],
        "b": ["a"],
        "c": ["b"],
        "downstream": ["c"],
        "further": ["downstream", "upstream"],
        "free": [],
    }
    with pytest.raises(DagCycleError) as info:
        topological_order("t", deps)
    assert sorted(info.value.cycle[:-1]) == ["a", "b", "c"]
    assert_is_cycle(info.value.cycle, deps)
    assert "a -> " in str(info.value) or "-> a" in str(info.value)


def test_when_several_cycles_exist_one_real_cycle_is_reported():
    deps = {"a": ["b"], "b": ["a"], "x": ["y"], "y": ["z"], "z": ["x"], "tail": ["a", "x"]}
    with pytest.raises(DagCycleError) as info:
        topological_order("t", deps)
    assert set(info.value.cycle) in ({"a", "b"}, {"x", "y", "z"})
    assert_is_cycle(info.value.cycle, deps)


def test_a_cycle_error_is_a_configuration_error_with_a_readable_path():
    with pytest.raises(ConfigurationError, match=r"cycle: (a -> b -> a|b -> a -> b)"):
        topological_order("t", {"a": ["b"], "b": ["a"]})


def test_a_self_dependency_is_a_cycle_error_raised_at_registration():
    """Given a step that depends on itself, when the template is made nothing is raised
    yet; when its handler is registered, then a DagCycleError names the cycle a -> a."""
    template = StepTemplate(name="a", handler=noop, depends_on=["a"])

    class SelfLoop(TaskHandler):
        name = "self_loop"
        step_templates = (StepTemplate(name="b", handler=noop), template)

    with pytest.raises(DagCycleError, match=r"cycle: a -> a$") as info:
        HandlerFactory().register(SelfLoop)
    assert info.value.cycle == ["a", "a"]


def test_a_self_loop_given_to_the_dag_check_directly_is_a_one_step_cycle():
    with pytest.raises(DagCycleError) as info:
        topological_order("t", {"a": ["a"], "b": []})
    assert info.value.cycle == ["a", "a"]


def test_find_cycle_walks_only_the_residual_steps():
    deps = {"a": ["c", "done"], "b": ["a"], "c": ["b"], "tail": ["c"], "done": []}
    cycle = find_cycle({"a", "b", "c", "tail"}, deps)
    assert sorted(cycle[:-1]) == ["a", "b", "c"]
    assert_is_cycle(cycle, deps)


def test_a_10000_step_chain_is_ordered():
    n = 10_000
    deps = {f"s{i}": ([f"s{i - 1}"] if i else []) for i in range(n)}
    # Declared in reverse so that the order has to be computed, not copied.
    reversed_deps = dict(reversed(list(deps.items())))
    order = topological_order("chain", reversed_deps)
    assert order == [f"s{i}" for i in range(n)]


def test_a_10000_step_wide_dag_is_ordered_root_first_and_sink_last():
    n = 10_000
    deps: dict[str, list[str]] = {"root": []}
    deps.update({f"w{i}": ["root"] for i in range(n)})
    deps["sink"] = [f"w{i}" for i in range(n)]
    order = topological_order("wide", deps)
    assert_valid_order(order, deps)
    assert order[0] == "root" and order[-1] == "sink"


def test_a_10000_step_cycle_is_reported_whole():
    n = 10_000
    deps = {f"s{i}": [f"s{(i - 1) % n}"] for i in range(n)}
    deps["hanger"] = ["s5"]
    with pytest.raises(DagCycleError) as info:
        topological_order("ring", deps)
    assert sorted(info.value.cycle[:-1]) == sorted(f"s{i}" for i in range(n))
    assert_is_cycle(info.value.cycle, deps)


def test_an_empty_graph_has_an_empty_order():
    assert topological_order("t", {}) == []


@hs.composite
def dags(draw):
    """Random DAGs: edges only from earlier to later steps; declared in a shuffled order."""
    n = draw(hs.integers(min_value=1, max_value=40))
    deps = {
        f"s{i}": [f"s{j}" for j in sorted(draw(hs.sets(hs.integers(0, i - 1), max_size=4)))]
        if i
        else []
        for i in range(n)
    }
    names = draw(hs.permutations(sorted(deps)))
    return {name: deps[name] for name in names}


@settings(max_examples=200, deadline=None, database=None)
@given(deps=dags())
def test_any_dag_gets_a_valid_order(deps):
    order = topological_order("t", deps)
    assert_valid_order(order, deps)


@settings(max_examples=200, deadline=None, database=None)
@given(deps=dags(), data=hs.data())
def test_any_back_edge_makes_a_cycle_that_is_reported_exactly(deps, data):
    order = topological_order("t", deps)
    # A path from `low` to `high` exists when high depends (transitively) on low; an edge
    # back from low to high closes a cycle.
    reach = {n: {n} for n in deps}
    for name in order:
        for d in deps[name]:
            reach[name] |= reach[d]
    candidates = [(lo, hi) for hi in order for lo in reach[hi] if lo != hi]
    if not candidates:
        return
    low, high = data.draw(hs.sampled_from(candidates))
    cyclic = {n: [*wanted, high] if n == low else list(wanted) for n, wanted in deps.items()}
    with pytest.raises(DagCycleError) as info:
        topological_order("t", cyclic)
    assert_is_cycle(info.value.cycle, cyclic)
    assert {low, high} <= set(info.value.cycle)
