"""Laying out and drawing DAGs (pure): layers, SVG, Mermaid and DOT."""

from __future__ import annotations

import re
from typing import ClassVar

from tasker import StepTemplate, TaskHandler
from tasker.definition.registry import compile_handler
from tasker.web import graph


def ok(task, sequence, step):
    return {}


class Diamond(TaskHandler):
    name = "diamond"
    step_templates: ClassVar = [
        StepTemplate(name="a", handler=ok),
        StepTemplate(name="b", handler=ok, depends_on=["a"]),
        StepTemplate(name="c", handler=ok, depends_on=["a"]),
        StepTemplate(name="d", handler=ok, depends_on=["b", "c"]),
    ]


def test_layers_follow_topological_generations_and_order_by_predecessors():
    """Given a DAG, then each node is in the layer after its deepest dependency, and
    within a layer nodes follow their predecessors' positions (fewer crossings)."""
    edges = [("a", "x"), ("b", "y"), ("x", "z"), ("y", "w")]
    assert graph.layers(["b", "a", "y", "x", "z", "w"], edges) == [
        ["b", "a"],
        ["y", "x"],
        ["w", "z"],
    ]
    assert graph.layers(["a", "b", "c", "d"], [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]) == [
        ["a"],
        ["b", "c"],
        ["d"],
    ]


def test_svg_draws_every_status_with_colour_glyph_and_label():
    """Given nodes in every status, then each node has its status's fill, glyph and a
    text label, pending and skipped a dashed border, and names are escaped."""
    nodes = [graph.Node(f"s-{st}", st) for st in graph.LOOKS] + [graph.Node("<b>&", None)]
    out = graph.svg(nodes, [("s-pending", "s-error")], {("s-pending", "s-error"): "yes"})
    for status, look in graph.LOOKS.items():
        node = re.search(rf'<g class="node status-{status} step".*?</g>', out)
        assert node, status
        assert look.fill in node.group() and look.glyph in node.group()
        assert status.replace("_", " ") in node.group()
    assert out.count("stroke-dasharray") == 2
    assert "&lt;b&gt;&amp;" in out and "<b>&" not in out
    assert '<text class="edge-label"' in out and ">yes<" in out


def test_mermaid_and_dot_of_a_handler():
    """Given a handler, then Mermaid and DOT list every step once and every edge."""
    reg = compile_handler(Diamond)
    mer = graph.mermaid(reg)
    assert mer.splitlines()[0] == "flowchart LR"
    assert mer.count("-->") == 4 and '["d"]' in mer
    dot = graph.dot(reg)
    assert dot.startswith('digraph "diamond 0.1.0" {')
    assert '"b" -> "d";' in dot and dot.count("->") == 4
    svg = graph.handler_svg(reg)
    assert svg.count('<g class="node ') == 4 and svg.count('class="edge"') == 4
