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


def _until(api: Any, tid: int, check: Any, what: str) -> Any:
    """Poll the task's JSON until `check(body)` holds."""
    deadline = time.monotonic() + 30
    while True:
        body = api.get(f"/api/v1/tasks/{tid}").json()
        if check(body):
            return body
        assert time.monotonic() < deadline, f"task {tid}: {what} never held: {body}"
        time.sleep(0.05)


def test_spawned_children_awaiting_steps_and_item_progress_are_drawn(
    server: Server, browser: Any
) -> None:
    """Given a task whose fan_out step spawned two running tasks and awaits them, when its
    page is open, then fan_out has a dotted ring and data-awaits="children", and each
    child is a node linked from it by a dashed edge, leading to the child's page (which
    links back to its parent); when the children finish, the page updates itself until
    the task is complete and the ring is gone. Given a for_each step with two of its three
    items done, then its node and the Items column say 2/3 and it awaits items."""
    with server.client() as api:
        tid = api.post("/api/v1/tasks", json={"name": "fanout"}).json()["task_id"]
        batch = api.post("/api/v1/tasks", json={"name": "batch"}).json()["task_id"]
        body = _until(
            api,
            tid,
            lambda b: b["steps"]["fan_out"]["waiting_for"] == "children",
            "fan_out awaits its children",
        )
        children = body["children"]
        assert len(children) == 2
        _until(
            api,
            batch,
            lambda b: (b["steps"]["each"]["items"] or {}).get("complete") == 2,
            "two items done",
        )

    page = _log_in(browser, server, READ_TOKEN)
    page.goto(f"{server.url}/tasks/{tid}")
    fan_out = page.locator('svg.dag g[data-step="fan_out"]')
    assert fan_out.get_attribute("data-awaits") == "children"
    assert fan_out.locator("rect.awaits-ring").get_attribute("stroke-dasharray")
    assert "awaits children" in fan_out.locator(".node-status").text_content()
    assert page.locator('tr[data-step="fan_out"] [data-awaits="children"]').count() == 1
    for child in children:
        node = page.locator(f'svg.dag g[data-child="{child}"]')
        assert node.count() == 1
        assert f"#{child} gated" in node.locator(".node-name").text_content()
        edge = page.locator(f'svg.dag path.spawn[data-from="fan_out"][data-to="task #{child}"]')
        assert edge.count() == 1
    assert page.locator('svg.dag g[data-step="report"]').get_attribute("data-awaits") is None
    _shoot(page, server, "task-children.png")

    page.click(f'svg.dag g[data-child="{children[0]}"]')
    page.wait_for_url(f"{server.url}/tasks/{children[0]}")
    assert page.locator(f'a[href="/tasks/{tid}"]').count() >= 1  # back to the parent
    page.goto(f"{server.url}/tasks/{tid}")
    for child in children:
        (server.folder / "marks" / f"{child}.open").write_text("go")
    page.wait_for_selector("h1 .badge.status-complete", timeout=30_000)
    assert page.locator('svg.dag g[data-step="fan_out"]').get_attribute("data-status") == (
        "complete"
    )
    assert page.locator("svg.dag rect.awaits-ring").count() == 0
    for child in children:
        node = page.locator(f'svg.dag g[data-child="{child}"]')
        assert node.get_attribute("data-status") == "complete"

    page.goto(f"{server.url}/tasks/{batch}")
    each = page.locator('svg.dag g[data-step="each"]')
    assert each.get_attribute("data-status") == "in_progress"  # its last item runs
    assert "2/3 items" in each.locator(".node-status").text_content()
    assert page.locator('tr[data-step="each"] td[data-items]').inner_text() == "2/3"
    assert page.locator("th", has_text="Items").count() == 1
    _shoot(page, server, "task-items.png")
    (server.folder / "marks" / f"{batch}.items").write_text("go")
    page.wait_for_selector("h1 .badge.status-complete", timeout=30_000)
    page.close()


def test_a_task_in_error_shows_a_banner_with_its_error(server: Server, browser: Any) -> None:
    """Given a task that timed out (its own error, not a step's), when its page is open,
    then an alert banner says the task failed and why; a complete task has no banner."""
    with server.client() as api:
        tid = api.post("/api/v1/tasks", json={"name": "stalled"}).json()["task_id"]
        ok = api.post("/api/v1/tasks", json={"name": "greet", "context": {"who": "x"}})
        wait_for(api, ok.json()["task_id"], "complete")
        body = wait_for(api, tid, "error")
        assert body["error"]["message"].startswith("task timed out")
    page = _log_in(browser, server, READ_TOKEN)
    page.goto(f"{server.url}/tasks/{tid}")
    banner = page.locator("[data-task-error][role=alert]")
    assert "Task failed" in banner.inner_text()
    assert body["error"]["message"] in banner.inner_text()
    _shoot(page, server, "task-timed-out.png")
    page.goto(f"{server.url}/tasks/{ok.json()['task_id']}")
    assert page.locator("[data-task-error]").count() == 0
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
