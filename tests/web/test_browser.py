"""The dashboard in a real browser: Debian's Chromium driven by Playwright.

Never a downloaded browser: `/usr/bin/chromium` (scripts/test installs it when
missing). Under CI=true a missing Chromium fails the test loudly; elsewhere it skips
with the command that installs it. Screenshots go to docs/screenshots/ with
TASKER_SCREENSHOTS=1 (else beside each test's files).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web_support import READ_TOKEN, WRITE_TOKEN, Server, wait_for

from tasker.web.graph import LOOKS

#: Debian's Chromium (TASKER_TEST_CHROMIUM only lets a test point it somewhere else).
CHROMIUM = Path(os.environ.get("TASKER_TEST_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium (Debian's), closed after the test."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/test does)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: the browser tests need Chromium. {message}", pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _shoot(page: Any, server: Server, name: str) -> None:
    """Take a screenshot: into docs/screenshots/ (the README's) from the SQLite run when
    TASKER_SCREENSHOTS=1, else beside the test's files, so a test run leaves the
    committed pictures alone."""
    folder = server.folder / "screenshots"
    if os.environ.get("TASKER_SCREENSHOTS") == "1" and (server.folder / "web.db").exists():
        folder = SHOTS
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name))
    assert (folder / name).stat().st_size > 0


def _log_in(browser: Any, server: Server, token: str) -> Any:
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    page.goto(f"{server.url}/tasks")
    page.goto(f"{server.url}/")
    assert "/login" in page.url
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/")
    return page


def test_open_a_failed_task_retry_it_and_see_it_complete(server: Server, browser: Any) -> None:
    """Given a task whose charge step failed for good (and a 50-step task), when a write
    token logs in, opens the list, opens the failed task, then the charge node is drawn
    in the error colour; when Retry is pressed, then the page updates itself until the
    task is complete and the node is in the complete colour."""
    with server.client() as api:
        wide = api.post("/api/v1/tasks", json={"name": "wide"}).json()["task_id"]
        tid = api.post("/api/v1/tasks", json={"name": "shipping", "context": {"total_cents": 4200}})
        tid = tid.json()["task_id"]
        wait_for(api, tid, "error")
        wait_for(api, wide, "complete")

    page = _log_in(browser, server, WRITE_TOKEN)
    assert page.locator(f'tr[data-task="{tid}"] .badge').inner_text().endswith("error")
    _shoot(page, server, "task-list.png")
    page.click(f'tr[data-task="{tid}"] a >> nth=0')
    page.wait_for_url(f"{server.url}/tasks/{tid}")
    node = page.locator('svg.dag g[data-step="charge"] rect')
    assert node.get_attribute("fill") == LOOKS["error"].fill
    assert "error" in page.locator('svg.dag g[data-step="charge"] .node-status').text_content()
    assert page.locator("pre.backtrace").first.inner_text().startswith("Traceback")
    _shoot(page, server, "task-failed.png")

    page.click("button[data-action=retry]")
    page.wait_for_selector("p.notice")
    page.wait_for_selector("h1 .badge.status-complete", timeout=30_000)
    node = page.locator('svg.dag g[data-step="charge"] rect')
    assert node.get_attribute("fill") == LOOKS["complete"].fill
    assert page.locator("button[data-action]").count() == 0  # nothing to steer any more
    _shoot(page, server, "task-retried.png")

    page.goto(f"{server.url}/tasks/{wide}")
    assert page.locator('svg.dag g[data-status="complete"]').count() == 50
    _shoot(page, server, "task-50-steps.png")
    page.close()


def test_a_read_token_sees_no_write_buttons(server: Server, browser: Any) -> None:
    """Given a failed task, when a read token logs in and opens it, then the DAG and the
    error show, and no write button or form is on the page."""
    with server.client() as api:
        tid = api.post("/api/v1/tasks", json={"name": "shipping"}).json()["task_id"]
        wait_for(api, tid, "error")
    page = _log_in(browser, server, READ_TOKEN)
    page.goto(f"{server.url}/tasks/{tid}")
    assert page.locator('svg.dag g[data-step="charge"] rect').get_attribute("fill") == (
        LOOKS["error"].fill
    )
    assert page.locator("button[data-action]").count() == 0
    assert page.locator("form[action*='/actions/']").count() == 0
    assert "read token" in page.locator("header").inner_text()
    page.close()


def test_a_running_task_page_updates_itself_without_a_reload(server: Server, browser: Any) -> None:
    """Given a task whose first step is running, when its page is open and the step then
    finishes, then the page shows the task complete by itself: the DAG node goes from
    in progress to complete, with no navigation (a value set in the page survives)."""
    with server.client() as api:
        tid = api.post("/api/v1/tasks", json={"name": "gated"}).json()["task_id"]
        deadline = time.monotonic() + 30
        while api.get(f"/api/v1/tasks/{tid}").json()["steps"]["wait_for_gate"]["status"] != (
            "in_progress"
        ):
            assert time.monotonic() < deadline, "the gated step never started"
            time.sleep(0.05)
    page = _log_in(browser, server, READ_TOKEN)
    page.goto(f"{server.url}/tasks/{tid}")
    node = 'svg.dag g[data-step="wait_for_gate"]'
    assert page.locator(node).get_attribute("data-status") == "in_progress"
    assert page.locator("#live").get_attribute("data-live") == "1"
    page.evaluate("window.sameDocument = 'yes'")

    (server.folder / "marks" / f"{tid}.open").write_text("go")

    page.wait_for_selector("h1 .badge.status-complete", timeout=30_000)
    assert page.locator(node).get_attribute("data-status") == "complete"
    assert page.evaluate("window.sameDocument") == "yes"
    assert page.locator("#live").get_attribute("data-live") == "0"  # it stops refreshing
    page.close()


def test_under_ci_a_missing_chromium_fails_loudly(tmp_path: Path) -> None:
    """Given CI=true and no Chromium where the browser tests look, when they run, then
    they fail (never skip) saying Chromium is missing and how to install it."""
    here = Path(__file__)
    env = {**os.environ, "CI": "true", "TASKER_TEST_CHROMIUM": str(tmp_path / "no-chromium")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            f"{here}::test_a_read_token_sees_no_write_buttons",
            "-k",
            "sqlite",
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        cwd=here.parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout
    assert "CI: the browser tests need Chromium" in result.stdout
    assert "apt-get install -y chromium" in result.stdout
    assert "1 error" in result.stdout and "skipped" not in result.stdout  # failed in set-up
