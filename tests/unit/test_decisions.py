"""Decisions (pure): which steps a decision skips, in the same write as its outcome."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from writes_support import NOW, RULES, Ended, running, step

from tasker import Decision, StepTemplate, TaskHandler
from tasker.core.branches import kept, not_taken
from tasker.core.spawns import Children, Spawn
from tasker.core.views import StepView
from tasker.core.writes import decide
from tasker.definition.registry import compile_handler
from tasker.errors import ConfigurationError
from tasker.testing import run_step
from tasker.web import graph


def ok(task, sequence, step):  # type: ignore[no-untyped-def]
    return {}


def route(task, sequence, step):  # type: ignore[no-untyped-def]
    return Decision(*task.context["take"], results={"took": task.context["take"]})


class Shipping(TaskHandler):
    name = "shipping"
    step_templates: ClassVar = [
        StepTemplate(
            name="route",
            handler=route,
            branches={"fast": ["express"], "slow": ["standard", "insure"]},
        ),
        StepTemplate(name="express", handler=ok, depends_on=["route"]),
        StepTemplate(name="standard", handler=ok, depends_on=["route"]),
        StepTemplate(name="insure", handler=ok, depends_on=["route"]),
        StepTemplate(name="label", handler=ok, depends_on=["standard", "insure"]),
        StepTemplate(name="notify", handler=ok, depends_on=["express", "label"]),
    ]


def test_the_decision_and_its_skips_are_one_write_and_a_join_is_left_to_run():
    """Given a decision step that chose "fast", When its outcome is recorded, Then the same
    write completes it, skips the slow branch and what lies only below it, and leaves the
    join (which depends on the branch taken too) pending; the express step starts."""
    reg = compile_handler(Shipping)
    views = {
        n: step(n, deps=tuple(sorted(t.depends_on)), sid=i)
        for i, (n, t) in enumerate(reg.steps.items())
    }
    views["route"] = running("route", sid=0)
    w = decide(
        views, [Ended("route", True, {"took": ["fast"]}, decision=("fast",))], NOW, RULES,
        steps=reg.steps,
    )  # fmt: skip
    assert w.steps["route"].status == "complete"
    assert {n: w.steps[n].status for n in ("standard", "insure", "label")} == dict.fromkeys(
        ("standard", "insure", "label"), "skipped"
    )
    assert "notify" not in w.steps or w.steps["notify"].status == "pending"
    assert w.started == ["express"]
    reasons = {c.name: c.reason for c in w.changes}
    assert reasons["route"] == "decided: fast"
    assert "'slow' not taken" in reasons["standard"]
    assert "below branch 'slow'" in reasons["label"]


def test_a_failed_decision_skips_nothing():
    """Given a decision step whose attempt failed, Then no branch is skipped."""
    reg = compile_handler(Shipping)
    views = {n: step(n, deps=tuple(sorted(t.depends_on)), sid=0) for n, t in reg.steps.items()}
    views["route"] = running("route", sid=0)
    err = {"message": "no", "error_class": "tasker.errors.NoDecisionError"}
    w = decide(views, [Ended("route", False, error=err)], NOW, RULES, steps=reg.steps)
    assert set(w.steps) == {"route"}
    assert w.steps["route"].status == "error"


@st.composite
def decided_dags(draw: st.DrawFn) -> tuple[dict[str, StepView], dict[str, list[str]], list[str]]:
    """A decision step "d", steps below it in a random DAG, random branches and choice."""
    n = draw(st.integers(1, 7))
    names = [f"s{i}" for i in range(n)]
    views = {"d": step("d", "complete", sid=0)}
    for i, name in enumerate(names):
        deps = draw(st.lists(st.sampled_from(["d", *names[:i]]), min_size=1, unique=True))
        views[name] = step(name, deps=tuple(sorted(deps)), sid=0)
    direct = [nm for nm in names if "d" in views[nm].depends_on]
    labels = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, unique=True))
    branches = {
        lb: draw(st.lists(st.sampled_from(direct), unique=True)) if direct else [] for lb in labels
    }
    chosen = draw(st.lists(st.sampled_from(labels), min_size=1, unique=True))
    return views, branches, chosen


@given(decided_dags())
def test_a_step_is_skipped_exactly_when_it_is_on_a_branch_not_taken_or_only_below_skipped_ones(
    case: tuple[dict[str, StepView], dict[str, list[str]], list[str]],
) -> None:
    """Given any DAG below a decision, any branches and any choice, Then a step is skipped
    iff it is named only by branches not chosen, or all its dependencies are skipped; a
    step named by a chosen branch, or depending on the decision step outside any branch,
    or on any step not skipped (a join), is not."""
    views, branches, chosen = case
    skipped = not_taken(views, "d", branches, chosen)
    taken = {n for lb in chosen for n in branches[lb]}
    untaken = {n for lb, ns in branches.items() if lb not in chosen for n in ns} - taken
    for name, v in views.items():
        if name == "d":
            assert name not in skipped
            continue
        expected = name in untaken or (
            name not in taken and all(d in skipped for d in v.depends_on)
        )
        assert (name in skipped) == expected, (name, skipped)
        if name in taken:
            assert name not in skipped


def test_branches_must_name_steps_depending_directly_on_the_decision_step():
    """Given branches naming a step below another step, or no step at all, Then
    registration raises ConfigurationError naming it; a label list that is a string too."""

    def handler(templates: list[StepTemplate]) -> type[TaskHandler]:
        return type("H", (TaskHandler,), {"name": "h", "step_templates": templates})

    with pytest.raises(ConfigurationError, match="'later'"):
        compile_handler(handler([
            StepTemplate(name="d", handler=ok, branches={"x": ["later"]}),
            StepTemplate(name="mid", handler=ok, depends_on=["d"]),
            StepTemplate(name="later", handler=ok, depends_on=["mid"]),
        ]))  # fmt: skip
    with pytest.raises(ConfigurationError, match="'nowhere'"):
        compile_handler(handler([StepTemplate(name="d", handler=ok, branches={"x": ["nowhere"]})]))
    with pytest.raises(ConfigurationError, match="list of step names"):
        StepTemplate(name="d", handler=ok, branches={"x": "mid"})
    with pytest.raises(ConfigurationError, match="branches"):
        StepTemplate(name="d", handler=ok, branches={})


def test_run_step_reports_the_decision_and_a_missing_one_as_no_decision_error():
    """Given a decision step run in isolation, Then `decision` holds its labels and the
    results the Decision carried; an unknown label fails it with NoDecisionError."""
    run = run_step(Shipping, "route", context={"take": ["slow"]})
    assert run.status == "complete"
    assert run.decision == ("slow",)
    assert run.results == {"took": ["slow"]}
    bad = run_step(Shipping, "route", context={"take": ["sideways"]})
    assert bad.status == "error" and bad.decision is None
    assert bad.error is not None and bad.error["error_class"].endswith("NoDecisionError")
    assert "sideways" in bad.error["message"]
    empty = run_step(Shipping, "route", context={"take": []})
    assert empty.error is not None and empty.error["error_class"].endswith("NoDecisionError")
    assert run_step(Shipping, "express").decision is None


def test_graphs_show_the_branch_labels_on_their_edges():
    """Given a handler with a decision step, Then Mermaid, DOT and SVG label its edges."""
    reg = compile_handler(Shipping)
    assert graph.branch_labels(reg) == {
        ("route", "express"): "fast",
        ("route", "standard"): "slow",
        ("route", "insure"): "slow",
    }
    assert '-->|"fast"|' in graph.mermaid(reg)
    assert '"route" -> "insure" [label="slow"];' in graph.dot(reg)
    assert '"label" -> "notify";' in graph.dot(reg)
    assert ">slow</text>" in graph.handler_svg(reg)


def _shipping_views(**overrides: StepView) -> dict[str, StepView]:
    reg = compile_handler(Shipping)
    views = {
        n: step(n, deps=tuple(sorted(t.depends_on)), sid=i)
        for i, (n, t) in enumerate(reg.steps.items())
    }
    return {**views, **overrides}


def test_a_decision_step_awaiting_its_children_keeps_its_decision_and_skips_nothing_yet():
    """Given a decision step that chose "fast" and spawned a child it waits for, When its
    outcome is recorded, Then it awaits its children, no branch is skipped or started,
    and the history row of the outcome keeps the labels (its details) and says so."""
    reg = compile_handler(Shipping)
    views = _shipping_views(route=running("route", sid=0))
    spawned = [Spawn("0", 101, True, new=object())]
    outcome = Ended("route", True, {"took": ["fast"]}, spawned=spawned, decision=("fast",))
    w = decide(views, [outcome], NOW, RULES, steps=reg.steps)
    assert (w.steps["route"].status, w.steps["route"].awaiting) == ("in_progress", "children")
    assert set(w.steps) == {"route"} and w.started == []
    (change,) = w.changes
    assert change.reason == "spawned 1 sub-task(s); waiting for 1; decided: fast"
    assert kept(change.details) == ("fast",)


def test_a_decision_step_whose_children_are_done_applies_its_kept_decision_in_that_write():
    """Given a decision step awaiting its children, which are all done, and the decision
    it kept ("fast"), When the write settles it, Then that write completes it, skips the
    slow branch and what lies only below it, and starts the express step."""
    reg = compile_handler(Shipping)
    waiting = replace(running("route", sid=0, awaiting="children"), results={"took": ["fast"]})
    views = _shipping_views(route=waiting)
    children = {"route": Children(False, None, 2, ("fast",))}
    w = decide(views, [], NOW, RULES, steps=reg.steps, children=children)
    assert w.steps["route"].status == "complete"
    assert w.steps["route"].results == {"took": ["fast"]}
    skipped = {n for n, v in w.steps.items() if v.status == "skipped"}
    assert skipped == {"standard", "insure", "label"}
    assert w.started == ["express"]
    reasons = {c.name: c.reason for c in w.changes}
    assert reasons["route"] == "all 2 sub-task(s) done; decided: fast"
    assert "'slow' not taken" in reasons["standard"]


@pytest.mark.parametrize(
    ("decision", "said"),
    [(None, "no decision was kept"), (("sideways",), "unknown branch(es) ['sideways']")],
)
def test_a_decision_step_done_waiting_without_a_known_kept_decision_fails_with_no_decision_error(
    decision: tuple[str, ...] | None, said: str
) -> None:
    """Given a decision step whose children are all done but which kept no decision, or
    one naming a branch it does not have, When the write settles it, Then it fails for
    good with NoDecisionError saying so, and no branch is skipped or started."""
    reg = compile_handler(Shipping)
    views = _shipping_views(route=running("route", sid=0, awaiting="children"))
    children = {"route": Children(False, None, 2, decision)}
    w = decide(views, [], NOW, RULES, steps=reg.steps, children=children)
    route = w.steps["route"]
    assert (route.status, route.awaiting, route.next_attempt_at) == ("error", None, None)
    assert route.error is not None and route.error["error_class"].endswith("NoDecisionError")
    assert said in route.error["message"]
    assert set(w.steps) == {"route"} and w.started == []


def test_a_decision_step_cannot_be_a_for_each_step():
    """Given a step with both branches= and for_each=, Then building it raises
    ConfigurationError naming the step and both options."""
    with pytest.raises(ConfigurationError) as raised:
        StepTemplate(
            name="each_route", handler=ok, branches={"x": ["a"]}, for_each=lambda t, s: [1]
        )
    message = str(raised.value)
    assert "'each_route'" in message and "branches=" in message and "for_each=" in message
