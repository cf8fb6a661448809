"""Show the chaos test's counts in the terminal summary (also without `-s`)."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    summary = getattr(terminalreporter.config, "chaos_summary", None)
    if summary:
        terminalreporter.write_sep("-", "chaos counts")
        terminalreporter.write_line(summary)
