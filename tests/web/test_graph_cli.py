"""`tasker graph NAME`: a registered handler's DAG as Mermaid, DOT or SVG, run as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from web_support import write_app


def graph(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**write_app(tmp_path), "TASKER_DATABASE_URL": f"sqlite:///{tmp_path}/g.db"}
    return subprocess.run(
        [sys.executable, "-m", "tasker", "graph", *args, "--app", "webapp:app"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_graph_prints_mermaid_dot_and_svg(tmp_path: Path) -> None:
    """Given an app with the shipping handler, when `tasker graph shipping` runs in each
    format, then each output names every step and edge; an unknown name exits 2."""
    mer = graph(tmp_path, "shipping")
    assert mer.returncode == 0, mer.stderr
    assert mer.stdout.startswith("flowchart LR") and mer.stdout.count("-->") == 4
    dot = graph(tmp_path, "shipping", "--format", "dot", "--version", "2.0.0")
    assert dot.returncode == 0 and '"charge" -> "ship";' in dot.stdout
    svg = graph(tmp_path, "shipping", "--format", "svg")
    assert svg.stdout.startswith("<svg") and svg.stdout.count('class="edge"') == 4
    unknown = graph(tmp_path, "nope")
    assert unknown.returncode == 2 and "no task handler named 'nope'" in unknown.stderr


def test_graph_labels_a_decision_steps_edges_with_its_branches(tmp_path: Path) -> None:
    """Given an app whose `approval` handler has a decision step, when `tasker graph
    approval` runs as Mermaid and DOT, then the edges to the branch steps carry the labels."""
    mer = graph(tmp_path, "approval")
    assert mer.returncode == 0, mer.stderr
    assert '-->|"express"|' in mer.stdout and '-->|"standard"|' in mer.stdout
    dot = graph(tmp_path, "approval", "--format", "dot")
    assert '"route" -> "fast" [label="express"];' in dot.stdout
    assert '"approve" -> "route";' in dot.stdout
