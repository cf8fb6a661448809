"""Drawing a DAG: laid out in layers (networkx's topological generations), as SVG, Mermaid or DOT.

The SVG is drawn on the server and inlined in the dashboard: every step is a node
whose colour, glyph, border and label all say its status, so the graph reads the
same for colour-blind users and in greyscale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

import networkx as nx

from tasker.definition.registry import RegisteredTask


@dataclass(frozen=True)
class Look:
    """How one status is drawn: fill and stroke (Okabe-Ito colours), a glyph, a dash."""

    fill: str
    stroke: str
    text: str
    glyph: str
    dash: str = ""


#: Colours from the Okabe-Ito palette (distinguishable with every common colour-vision
#: deficiency); each status also has its own glyph and label, and pending/skipped their
#: own border, so no status is told by colour alone.
LOOKS: dict[str, Look] = {
    "pending": Look("#ffffff", "#6b6b6b", "#222222", "○", "5 3"),
    "in_progress": Look("#0072B2", "#00507d", "#ffffff", "▶"),
    "complete": Look("#009E73", "#006b4e", "#ffffff", "✓"),
    "error": Look("#D55E00", "#8f3f00", "#ffffff", "✗"),
    "cancelled": Look("#3b3b3b", "#000000", "#ffffff", "⊘"),
    "resolved_manually": Look("#56B4E9", "#2a7fb0", "#10202b", "✎"),
    "skipped": Look("#eeeeee", "#8a8a8a", "#333333", "↷", "2 3"),
    "paused": Look("#E69F00", "#a36f00", "#1d1400", "‖"),
    "waiting": Look("#F0E442", "#9c9322", "#1f1d00", "◔"),
}
NEUTRAL = Look("#f5f7fa", "#5b6b7f", "#1b2430", "•")

#: A step's edge to a task it spawned: dashed, darker than a dependency's.
SPAWN_EDGE = 'class="edge spawn" stroke="#5b6b7f" stroke-dasharray="6 4"'

NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 168, 46, 64, 18, 16


@dataclass(frozen=True)
class Node:
    """A node to draw: its name, status (None: a handler's DAG) and a second line.

    `awaits` is what a step whose handler returned still waits for ("children",
    "items"; drawn as a dotted ring around it). `child` is the id of a task a step
    spawned (drawn as a pill, labelled `label`); `label` defaults to the name.
    """

    name: str
    status: str | None = None
    note: str = ""
    href: str | None = None
    awaits: str | None = None
    child: int | None = None
    label: str | None = None


@dataclass
class Layout:
    """Node positions (top-left corners) in layers, and the drawing's size."""

    layers: list[list[str]]
    xy: dict[str, tuple[int, int]] = field(default_factory=dict)
    width: int = 0
    height: int = 0


def layers(names: Sequence[str], edges: Sequence[tuple[str, str]]) -> list[list[str]]:
    """The names in layers: each after every layer it depends on (networkx generations).

    Within a layer, nodes are ordered by the mean position of their predecessors (the
    barycentre heuristic), so edges cross less; ties keep the given order.
    """
    g = nx.DiGraph()
    g.add_nodes_from(names)
    g.add_edges_from(edges)
    given = {n: i for i, n in enumerate(names)}
    out: list[list[str]] = []
    row: dict[str, float] = {}
    for generation in nx.topological_generations(g):

        def key(n: str) -> tuple[float, int]:
            preds = [row[p] for p in g.predecessors(n)]
            return (sum(preds) / len(preds) if preds else -1.0, given[n])

        ordered = sorted(generation, key=key)
        row.update({n: float(i) for i, n in enumerate(ordered)})
        out.append(ordered)
    return out


def layout(names: Sequence[str], edges: Sequence[tuple[str, str]]) -> Layout:
    """Place the nodes: a column per layer, left to right, each column centred."""
    found = Layout(layers(names, edges))
    tallest = max((len(col) for col in found.layers), default=0)
    full = tallest * NODE_H + max(tallest - 1, 0) * ROW_GAP
    for c, col in enumerate(found.layers):
        height = len(col) * NODE_H + (len(col) - 1) * ROW_GAP
        top = PAD + (full - height) // 2
        for r, name in enumerate(col):
            found.xy[name] = (PAD + c * (NODE_W + COL_GAP), top + r * (NODE_H + ROW_GAP))
    found.width = 2 * PAD + len(found.layers) * NODE_W + max(len(found.layers) - 1, 0) * COL_GAP
    found.height = 2 * PAD + full
    return found


def _short(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


def svg(
    nodes: Sequence[Node],
    edges: Sequence[tuple[str, str]],
    edge_labels: Mapping[tuple[str, str], str] | None = None,
    title: str = "DAG",
    spawn_edges: Sequence[tuple[str, str]] = (),
) -> str:
    """The DAG as an inline SVG element (nodes link to `href` when given).

    `spawn_edges` link a step to the tasks it spawned (dashed, marked "spawned").
    """
    names = [n.name for n in nodes]
    placed = layout(names, [*edges, *spawn_edges])
    by_name = {n.name: n for n in nodes}
    labels = edge_labels or {}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" role="img" '
        f'width="{placed.width}" height="{placed.height}" '
        f'viewBox="0 0 {placed.width} {placed.height}" aria-label="{escape(title)}">',
        "<title>" + escape(title) + "</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#5b6b7f"/></marker></defs>',
    ]
    spawns = set(spawn_edges)
    for frm, to in [*spawn_edges, *edges]:
        (x1, y1), (x2, y2) = placed.xy[frm], placed.xy[to]
        sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H // 2, x2, y2 + NODE_H // 2
        mid = (sx + ex) // 2
        spawn = (frm, to) in spawns
        look = SPAWN_EDGE if spawn else 'class="edge" stroke="#8795a8"'
        parts.append(
            f'<path {look} data-from="{escape(frm)}" data-to="{escape(to)}" '
            f'd="M{sx},{sy} C{mid},{sy} {mid},{ey} {ex - 2},{ey}" fill="none" '
            f'stroke-width="1.5" marker-end="url(#arrow)">'
            f"{'<title>spawned</title>' if spawn else ''}</path>"
        )
        label = labels.get((frm, to))
        if label:
            parts.append(
                f'<text class="edge-label" x="{mid}" y="{(sy + ey) // 2 - 4}" '
                f'text-anchor="middle">{escape(_short(label, 20))}</text>'
            )
    for name in names:
        parts.append(_node(by_name[name], *placed.xy[name]))
    parts.append("</svg>")
    return "".join(parts)


def _node(node: Node, x: int, y: int) -> str:
    """One node: a box (a pill for a spawned task), glyph, name, a line saying its status.

    A step that awaits children or items gets a dotted ring around it.
    """
    look = LOOKS.get(node.status or "", NEUTRAL)
    status = node.status or ""
    second = " · ".join(p for p in (status.replace("_", " "), node.note) if p)
    tip = f"<title>{escape(node.label or node.name)}: {escape(second or 'step')}</title>"
    if node.awaits and node.note:
        second = node.note  # the ring and glyph say it runs; the line says what it awaits
    dash = f' stroke-dasharray="{look.dash}"' if look.dash else ""
    label = node.label or node.name
    ring = ""
    if node.awaits:
        ring = (
            f'<rect class="awaits-ring" x="{x - 5}" y="{y - 5}" width="{NODE_W + 10}" '
            f'height="{NODE_H + 10}" rx="12" fill="none" stroke="#1b2430" stroke-width="2.5" '
            'stroke-dasharray="0.5 5" stroke-linecap="round"/>'
        )
    shape = (
        f'{ring}<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" '
        f'rx="{NODE_H // 2 if node.child is not None else 8}" '
        f'fill="{look.fill}" stroke="{look.stroke}" stroke-width="2"{dash}/>'
        f'<text x="{x + 12}" y="{y + 19}" fill="{look.text}" class="glyph">{look.glyph}</text>'
        f'<text x="{x + 30}" y="{y + 19}" fill="{look.text}" class="node-name">'
        f"{escape(_short(label, 18))}</text>"
        f'<text x="{x + 30}" y="{y + 36}" fill="{look.text}" class="node-status">'
        f"{escape(_short(second, 24))}</text>"
    )
    kind = "child" if node.child is not None else "step"
    attrs = f'class="node status-{escape(status or "none")} {kind}" '
    attrs += (
        f'data-child="{node.child}" '
        if node.child is not None
        else f'data-step="{escape(node.name)}" '
    )
    if node.awaits:
        attrs += f'data-awaits="{escape(node.awaits)}" '
    attrs += f'data-status="{escape(status)}" data-fill="{look.fill}"'
    body = f"<g {attrs}>{tip}{shape}</g>"
    if node.href:
        body = f'<a href="{escape(node.href)}">{body}</a>'
    return body


def handler_edges(reg: RegisteredTask) -> list[tuple[str, str]]:
    """The edges of a handler's DAG: (dependency, dependent)."""
    return [(d, t.name) for t in reg.steps.values() for d in t.depends_on]


def branch_labels(reg: RegisteredTask) -> dict[tuple[str, str], str]:
    """The branch labels of a handler's decision steps, by edge (decision step, branch step).

    An edge that several branches share shows their labels joined by " | ".
    """
    out: dict[tuple[str, str], str] = {}
    for t in reg.steps.values():
        for label, names in (t.branches or {}).items():
            for target in names:
                key = (t.name, target)
                out[key] = f"{out[key]} | {label}" if key in out else label
    return out


def _mermaid_id(name: str, ids: dict[str, str]) -> str:
    return ids.setdefault(name, f"s{len(ids)}")


def mermaid(reg: RegisteredTask) -> str:
    """A handler's DAG as a Mermaid flowchart (left to right)."""
    ids: dict[str, str] = {}
    lines = ["flowchart LR"]
    for name in reg.order:
        label = name.replace('"', "#quot;")
        lines.append(f'    {_mermaid_id(name, ids)}["{label}"]')
    labels = branch_labels(reg)
    for frm, to in handler_edges(reg):
        branch = labels.get((frm, to))
        arrow = "-->" if branch is None else f'-->|"{branch.replace(chr(34), "#quot;")}"|'
        lines.append(f"    {ids[frm]} {arrow} {ids[to]}")
    return "\n".join(lines)


def dot(reg: RegisteredTask) -> str:
    """A handler's DAG in Graphviz DOT (left to right)."""

    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"digraph {q(f'{reg.name} {reg.version}')} {{", "    rankdir=LR;"]
    lines += [f"    {q(n)} [shape=box, style=rounded];" for n in reg.order]
    labels = branch_labels(reg)
    for frm, to in handler_edges(reg):
        label = labels.get((frm, to))
        lines.append(f"    {q(frm)} -> {q(to)};" if label is None else (
            f"    {q(frm)} -> {q(to)} [label={q(label)}];"
        ))  # fmt: skip
    lines.append("}")
    return "\n".join(lines)


def handler_svg(reg: RegisteredTask) -> str:
    """A handler's DAG as a standalone SVG document."""
    nodes = [Node(n, None, reg.steps[n].dependent_system) for n in reg.order]
    return svg(nodes, handler_edges(reg), branch_labels(reg), title=f"{reg.name} {reg.version}")
