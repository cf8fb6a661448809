"""Decisions (pure): which steps a decision skips, in the same write as its outcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasker import Decision, StepTemplate, TaskHandler
from tasker.core.branches import not_taken
from tasker.core.views import StepView
from tasker.core.writes import Rules, decide
from tasker.definition.registry import compile_handler
from tasker.errors import ConfigurationError
from tasker.testing import run_step
from tasker.web import graph

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
RULES = Rules(backoff_base=1, backoff_max=300, max_concurrent_steps=8)


def view(name: str, deps: tuple[str, ...] = (), status: str = "pending", sid: int = 0) -> StepView:
    return StepView(
        sid, name, status, 1 if status == "in_progress" else 0, 3, True, False, deps, "default",
        None, None, None, None, None,
    )  # fmt: skip


@dataclass
class Ended:
    name: str
    ok: bool
    results: Any = None
    error: dict[str, Any] | None = None
    retry_after: float | None = None
    permanent: bool = False
    flow: str | None = None
    wait: float | None = None
    reason: str = ""
    decision: tuple[str, ...] | None = None
    spawned: tuple[Any, ...] = ()


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
        n: view(n, tuple(sorted(t.depends_on)), sid=i) for i, (n, t) in enumerate(reg.steps.items())
    }
    views["route"] = view("route", status="in_progress")
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
    views = {n: view(n, tuple(sorted(t.depends_on))) for n, t in reg.steps.items()}
    views["route"] = view("route", status="in_progress")
    err = {"message": "no", "error_class": "tasker.errors.NoDecisionError"}
    w = decide(views, [Ended("route", False, error=err)], NOW, RULES, steps=reg.steps)
    assert set(w.steps) == {"route"}
    assert w.steps["route"].status == "error"


@st.composite
def decided_dags(draw: st.DrawFn) -> tuple[dict[str, StepView], dict[str, list[str]], list[str]]:
    """A decision step "d", steps below it in a random DAG, random branches and choice."""
    n = draw(st.integers(1, 7))
    names = [f"s{i}" for i in range(n)]
    views = {"d": view("d", status="complete")}
    for i, name in enumerate(names):
        deps = draw(st.lists(st.sampled_from(["d", *names[:i]]), min_size=1, unique=True))
        views[name] = view(name, tuple(sorted(deps)))
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
