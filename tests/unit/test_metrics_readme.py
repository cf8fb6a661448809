"""The README's lists of metric series (a Grafana user's reference) match what is served."""

from __future__ import annotations

import re
from pathlib import Path

from tasker.web import ops, worker_metrics

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def _documented() -> dict[str, tuple[str, ...]]:
    """Series name -> labels, from the README's metrics tables."""
    found = {}
    for line in README.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and re.fullmatch(r"`tasker_\w+`", cells[0]):
            labels = next((c for c in cells[1:] if "`" in c or c == ""), "")
            found[cells[0].strip("`")] = tuple(re.findall(r"`(\w+)`", labels))
    return found


def test_every_served_series_is_listed_in_the_readme_with_its_labels() -> None:
    """Given the series /metrics and the workers' metrics port serve, then the README
    lists each of them, with the same labels, and lists no other."""
    documented = _documented()
    served = {name: labels for name, (labels, _) in ops.SERIES.items()}
    served.update({name: labels for name, (_, labels, _) in worker_metrics.SERIES.items()})
    assert documented == served
