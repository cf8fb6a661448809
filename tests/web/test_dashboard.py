"""The dashboard's pages and forms through a real `tasker serve` (SQLite, PostgreSQL):
login and its cookie, CSRF, scopes, filters and the DAG of a task page."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import pytest
from web_support import READ_TOKEN, WRITE_TOKEN, Server, wait_for


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


@pytest.fixture
def login(server: Server) -> Iterator[Callable[[str], httpx.Client]]:
    """Log a new client (a browser's cookie jar) in with a token; all closed after."""
    clients: list[httpx.Client] = []

    def log_in(token: str) -> httpx.Client:
        browser = httpx.Client(base_url=server.url, timeout=30)
        clients.append(browser)
        r = browser.post("/login", data={"token": token, "next": "/"})
        assert r.status_code == 303 and r.headers["location"] == "/"
        return browser

    yield log_in
    for c in clients:
        c.close()


def test_login_sets_a_strict_httponly_cookie_that_the_api_ignores(server: Server, login) -> None:
    """Given no credentials, when the list is opened, then it redirects to /login; an
    unknown token is sent back with an error; a good one sets an HttpOnly SameSite=Strict
    cookie that opens the dashboard but not the JSON API; logging out forgets it."""
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        r = anon.get("/")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        r = anon.post("/login", data={"token": "nope", "next": "/"})
        assert r.status_code == 303 and "error=" in r.headers["location"]
        assert "tasker_session" not in r.headers.get("set-cookie", "")
    browser = login(READ_TOKEN)
    cookie = browser.cookies.jar
    r = browser.post("/login", data={"token": READ_TOKEN, "next": "//evil.example/"})
    assert r.headers["location"] == "/"  # never a redirect off the site
    set_cookie = httpx.post(f"{server.url}/login", data={"token": READ_TOKEN}).headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie.replace("Strict", "strict")
    assert READ_TOKEN not in set_cookie
    assert any(c.name == "tasker_session" for c in cookie)
    page = browser.get("/")
    assert page.status_code == 200 and "Tasks" in page.text
    assert browser.get("/api/v1/tasks").status_code == 401
    r = browser.post("/logout", data={"csrf": _csrf(page.text)})
    assert r.status_code == 303
    assert browser.get("/").status_code == 303


def test_read_token_sees_no_write_buttons_and_cannot_post(server: Server, login) -> None:
    """Given a failed task, when a read token opens its page, then no write form is
    shown, and a forged POST with the read session's CSRF token is 403 and changes
    nothing; an unknown task's page is a 404 page saying so."""
    with server.client() as api:
        tid = api.post("/api/v1/tasks", json={"name": "shipping"}).json()["task_id"]
        wait_for(api, tid, "error")
        reader = login(READ_TOKEN)
        page = reader.get(f"/tasks/{tid}")
        assert page.status_code == 200
        assert "data-action" not in page.text and "/actions/" not in page.text
        r = reader.post(f"/tasks/{tid}/actions/retry", data={"csrf": _csrf(page.text)})
        assert r.status_code == 403
        assert api.get(f"/api/v1/tasks/{tid}").json()["status"] == "error"
        missing = reader.get("/tasks/999999")
        assert missing.status_code == 404 and "no task has id 999999" in missing.text
        # Values no column can hold are refused, not a database error.
        assert reader.get(f"/tasks/{2**64}").status_code == 422
        assert reader.get("/", params={"name": "a\x00b"}).status_code == 422


def test_write_actions_need_the_csrf_token(server: Server, login) -> None:
    """Given a failed task and a write session, when retry is posted without or with a
    wrong CSRF token, then 403 and nothing changes; with the page's token, the task is
    retried and completes; then cancel is refused with a message on the page."""
    with server.client() as api:
        tid = api.post("/api/v1/tasks", json={"name": "shipping"}).json()["task_id"]
        wait_for(api, tid, "error")
        writer = login(WRITE_TOKEN)
        page = writer.get(f"/tasks/{tid}")
        for data in ({}, {"csrf": "0" * 64}):
            assert writer.post(f"/tasks/{tid}/actions/retry", data=data).status_code == 403
        assert api.get(f"/api/v1/tasks/{tid}").json()["status"] == "error"
        r = writer.post(f"/tasks/{tid}/actions/retry", data={"csrf": _csrf(page.text)})
        assert r.status_code == 303 and "notice=" in r.headers["location"]
        wait_for(api, tid, "complete")
        r = writer.post(f"/tasks/{tid}/actions/cancel", data={"csrf": _csrf(page.text)})
        assert r.status_code == 303 and "error=" in r.headers["location"]
        shown = writer.get(r.headers["location"]).text
        assert "complete" in shown and 'class="error"' in shown


def test_resolve_from_the_page_with_results(server: Server, login) -> None:
    """Given a failed step, when it is resolved from its form with results JSON, then it
    is resolved_manually with those results and the task completes; invalid JSON is
    reported on the page and changes nothing."""
    with server.client() as api:
        tid = api.post("/api/v1/tasks", json={"name": "shipping"}).json()["task_id"]
        wait_for(api, tid, "error")
        writer = login(WRITE_TOKEN)
        csrf = _csrf(writer.get(f"/tasks/{tid}").text)
        bad = {"csrf": csrf, "step": "charge", "results": "{not json"}
        r = writer.post(f"/tasks/{tid}/actions/resolve", data=bad)
        assert "error=" in r.headers["location"]
        assert api.get(f"/api/v1/tasks/{tid}").json()["steps"]["charge"]["status"] == "error"
        good = {"csrf": csrf, "step": "charge", "results": '{"cleared": "by operator"}'}
        writer.post(f"/tasks/{tid}/actions/resolve", data=good)
        done = wait_for(api, tid, "complete")
        assert done["steps"]["charge"]["results"] == {"cleared": "by operator"}


def test_list_counts_filters_and_the_dag_of_fifty_steps(server: Server, login) -> None:
    """Given a failed task and a 50-step task, then the list counts each status and
    filters by status and name; the 50-step page draws 50 nodes and 49 edges, each node
    labelled with its status, the failed node in the error colour."""
    with server.client() as api:
        failed = api.post("/api/v1/tasks", json={"name": "shipping"}).json()["task_id"]
        wide = api.post("/api/v1/tasks", json={"name": "wide"}).json()["task_id"]
        wait_for(api, failed, "error")
        wait_for(api, wide, "complete")
        page = api.get("/").text
        assert 'data-count="error">1<' in page and 'data-count="complete">1<' in page
        only_error = api.get("/", params={"status": "error"}).text
        assert f'data-task="{failed}"' in only_error and f'data-task="{wide}"' not in only_error
        by_name = api.get("/", params={"name": "wide"}).text
        assert f'data-task="{wide}"' in by_name and f'data-task="{failed}"' not in by_name
        big = api.get(f"/tasks/{wide}").text
        assert big.count('class="node status-complete step"') == 50
        assert big.count('class="edge"') == 49
        small = api.get(f"/tasks/{failed}").text
        assert 'data-step="charge" data-status="error" data-fill="#D55E00"' in small
        assert "card declined" in small and "Traceback" in small  # the error with backtrace
