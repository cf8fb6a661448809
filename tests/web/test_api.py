"""The JSON API through a real `tasker serve` process on a real port (SQLite, PostgreSQL)."""

from __future__ import annotations

import pytest
from web_support import READ_TOKEN, Server, wait_for

PROBLEM = "application/problem+json"


def test_enqueue_run_and_read_a_task(server: Server) -> None:
    """Given a write token, when a registered task is enqueued over HTTP, then it is 201
    with the task, the worker runs it, and GET shows its steps keyed by name."""
    with server.client() as c:
        r = c.post("/api/v1/tasks", json={"name": "greet", "context": {"who": "ann"}})
        assert r.status_code == 201, r.text
        task = r.json()
        assert task["name"] == "greet" and task["status"] == "pending"
        assert set(task["steps"]) == {"say"}
        assert task["steps"]["say"]["waiting_for"] in (None, "dependencies", "time")
        done = wait_for(c, task["task_id"], "complete")
        assert done["steps"]["say"]["results"] == {"greeting": "hello ann"}
        step = c.get(f"/api/v1/tasks/{task['task_id']}/steps/say").json()
        assert step["status"] == "complete" and step["attempts"] == 1
        history = c.get(f"/api/v1/tasks/{task['task_id']}/history").json()["items"]
        assert [h["to_status"] for h in history if h["step"] is None][-1] == "complete"


def test_idempotent_repeat_is_200_and_conflict_409(server: Server) -> None:
    """Given an idempotency key, when the same request is sent twice, then the second is
    200 with the first task; the same key with another context is a 409 problem."""
    body = {"name": "greet", "context": {"who": "bo"}, "idempotency_key": "k-1"}
    with server.client() as c:
        first = c.post("/api/v1/tasks", json=body)
        again = c.post("/api/v1/tasks", json=body)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["task_id"] == first.json()["task_id"]
        clash = c.post("/api/v1/tasks", json={**body, "context": {"who": "cy"}})
        assert clash.status_code == 409
        assert clash.headers["content-type"].startswith(PROBLEM)
        assert "idempotency" in clash.json()["type"]


def test_auth_401_without_token_403_for_read_token(server: Server) -> None:
    """Given the server's tokens, when a request has none, an unknown one, or a read token
    on a write endpoint, then 401, 401 and 403 problems; reads work with a read token."""
    with server.client(token=None) as anon:
        r = anon.get("/api/v1/tasks")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.headers["content-type"].startswith(PROBLEM)
        assert anon.get("/openapi.json").status_code == 401
        assert anon.get("/health").status_code == 200
    with server.client(token="not-a-token") as bad:
        assert bad.get("/api/v1/tasks").status_code == 401
    with server.client(token=READ_TOKEN) as reader:
        assert reader.get("/api/v1/tasks").status_code == 200
        assert reader.get("/openapi.json").status_code == 200
        r = reader.post("/api/v1/tasks", json={"name": "greet", "context": {"who": "x"}})
        assert r.status_code == 403 and "read scope" in r.json()["detail"]
    with server.client() as c:
        assert c.get("/api/v1/tasks").json()["items"] == []  # the 403 stored nothing


def test_list_is_newest_first_and_cursor_paginated(server: Server) -> None:
    """Given five tasks, when listed two at a time, then pages are newest first, chained
    by next_cursor, the last with next_cursor null; filters narrow by name and status."""
    with server.client() as c:
        ids = [
            c.post("/api/v1/tasks", json={"name": "greet", "context": {"who": f"p{i}"}}).json()[
                "task_id"
            ]
            for i in range(5)
        ]
        seen, cursor, pages = [], None, 0
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = c.get("/api/v1/tasks", params=params).json()
            seen += [t["task_id"] for t in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(ids, reverse=True) and pages == 3
        assert c.get("/api/v1/tasks", params={"name": "shipping"}).json()["items"] == []
        bad = c.get("/api/v1/tasks", params={"cursor": "garbage"})
        assert bad.status_code == 422 and "cursor" in bad.json()["detail"]
        for t in ids:
            wait_for(c, t, "complete")
        done = c.get("/api/v1/tasks", params={"status": "complete"}).json()["items"]
        assert len(done) == 5
        assert c.get("/api/v1/tasks", params={"status": "nope"}).status_code == 422


def test_failed_step_retry_resolve_and_cancel(server: Server) -> None:
    """Given a task whose charge step fails for good, when it is retried over HTTP, then
    it completes; retrying a complete task is 409; cancelling a finished one is 409."""
    with server.client() as c:
        tid = c.post("/api/v1/tasks", json={"name": "shipping"}).json()["task_id"]
        failed = wait_for(c, tid, "error")
        assert failed["steps"]["charge"]["error"]["message"].startswith("card declined")
        assert "backtrace" in failed["steps"]["charge"]["error"]
        r = c.post(f"/api/v1/tasks/{tid}/retry")
        assert r.status_code == 200, r.text
        wait_for(c, tid, "complete")
        again = c.post(f"/api/v1/tasks/{tid}/retry")
        assert again.status_code == 409 and again.headers["content-type"].startswith(PROBLEM)
        assert c.delete(f"/api/v1/tasks/{tid}").status_code == 409
        # A second one is resolved by hand instead.
        tid2 = c.post("/api/v1/tasks", json={"name": "shipping"}).json()["task_id"]
        wait_for(c, tid2, "error")
        r = c.post(f"/api/v1/tasks/{tid2}/steps/charge/resolve", json={"charged_cents": 1})
        assert r.status_code == 200 and r.json()["status"] == "resolved_manually"
        assert r.json()["results"] == {"charged_cents": 1}
        assert wait_for(c, tid2, "complete")["steps"]["ship"]["status"] == "complete"


def test_patch_task_and_step_and_cancel_step(server: Server) -> None:
    """Given a failed task, when its reason/tags and a pending step's retry_limit and
    inputs are changed, then GET shows them; changing a completed step is 409;
    cancelling a pending step makes it cancelled; an unknown step is 404."""
    with server.client() as c:
        tid = c.post("/api/v1/tasks", json={"name": "shipping"}).json()["task_id"]
        wait_for(c, tid, "error")
        r = c.patch(f"/api/v1/tasks/{tid}", json={"reason": "customer called", "tags": ["vip"]})
        assert r.status_code == 200 and r.json()["reason"] == "customer called"
        assert r.json()["tags"] == ["vip"]
        r = c.patch(
            f"/api/v1/tasks/{tid}/steps/ship", json={"retry_limit": 7, "inputs": {"fast": True}}
        )
        assert r.status_code == 200, r.text
        assert (r.json()["retry_limit"], r.json()["inputs"]) == (7, {"fast": True})
        done = c.patch(f"/api/v1/tasks/{tid}/steps/validate", json={"retry_limit": 2})
        assert done.status_code == 409 and "complete" in done.json()["detail"]
        assert c.get(f"/api/v1/tasks/{tid}/steps/nope").status_code == 404
        r = c.delete(f"/api/v1/tasks/{tid}/steps/ship")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert c.delete(f"/api/v1/tasks/{tid}/steps/ship").status_code == 409
        assert c.patch(f"/api/v1/tasks/{tid}", json={"status": "complete"}).status_code == 422
        r = c.delete(f"/api/v1/tasks/{tid}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"


def test_an_event_posted_over_http_wakes_the_waiting_step(server: Server) -> None:
    """Given a task whose first step waits for "approved", when the event is posted with a
    JSON body, then the step takes the body as its results and the task completes down the
    branch its decision took; a name no step waits for is 422, a finished task 409, an
    unknown task 404, each a problem."""
    with server.client() as c:
        r = c.post("/api/v1/tasks", json={"name": "approval", "context": {"speed": "express"}})
        tid = r.json()["task_id"]
        wrong = c.post(f"/api/v1/tasks/{tid}/events/rejected", json={"by": "eve"})
        assert wrong.status_code == 422, wrong.text
        assert wrong.headers["content-type"].startswith(PROBLEM)
        assert "approved" in wrong.json()["detail"]
        r = c.post(f"/api/v1/tasks/{tid}/events/approved", json={"by": "ann"})
        assert r.status_code == 200, r.text
        done = wait_for(c, tid, "complete")
        assert done["steps"]["approve"]["results"] == {"by": "ann"}
        assert done["steps"]["fast"]["status"] == "complete"
        assert done["steps"]["slow"]["status"] == "skipped"
        late = c.post(f"/api/v1/tasks/{tid}/events/approved", json={"by": "bob"})
        assert late.status_code == 409 and late.headers["content-type"].startswith(PROBLEM)
        assert c.post("/api/v1/tasks/987654321/events/approved", json={}).status_code == 404


def test_resume_over_http_lets_a_paused_task_go_on(server: Server) -> None:
    """Given a task its step paused, when POST .../resume is sent with a write token, then
    the answer is 200 with the task no longer paused and it completes; resuming a task that
    is not paused is a 409 problem, an unknown task 404, a read token 403; the OpenAPI
    document declares exactly those answers (no 501 anywhere)."""
    with server.client() as c:
        tid = c.post("/api/v1/tasks", json={"name": "held"}).json()["task_id"]
        wait_for(c, tid, "paused")
        with server.client(READ_TOKEN) as reader:
            denied = reader.post(f"/api/v1/tasks/{tid}/resume")
            assert denied.status_code == 403 and denied.headers["content-type"].startswith(PROBLEM)
        r = c.post(f"/api/v1/tasks/{tid}/resume")
        assert r.status_code == 200, r.text
        assert r.json()["task_id"] == tid and r.json()["status"] != "paused"
        done = wait_for(c, tid, "complete")
        assert done["steps"]["look"]["results"] == {"looked": True}
        again = c.post(f"/api/v1/tasks/{tid}/resume")
        assert again.status_code == 409 and again.headers["content-type"].startswith(PROBLEM)
        assert "paused" in again.json()["detail"]
        assert c.post("/api/v1/tasks/987654321/resume").status_code == 404
        spec = c.get("/openapi.json").json()
        resume = spec["paths"]["/api/v1/tasks/{task_id}/resume"]["post"]["responses"]
        assert sorted(resume) == ["200", "401", "403", "404", "409", "422"]
        for path in spec["paths"].values():
            for op in path.values():
                assert "501" not in op["responses"], op["summary"]


def test_handlers_annotations_health_and_metrics(server: Server) -> None:
    """Given the served app, then /handlers lists every version with its DAG edges and
    its decision steps' branches (each label with the steps it takes), /annotations
    filters, /health checks the database and broker, and /metrics counts tasks by name
    and status from the database (0 for a registered name with none) and, the engine
    running in the serving process (`--worker`), the worker's series too."""
    with server.client() as c:
        handlers = c.get("/api/v1/handlers").json()["items"]
        shipping = next(h for h in handlers if h["name"] == "shipping")
        assert shipping["version"] == "2.0.0"
        assert ["charge", "ship"] in shipping["edges"]
        assert {s["name"]: s["transactional"] for s in shipping["steps"]}["charge"] is False
        assert shipping["branches"] == []
        approval = next(h for h in handlers if h["name"] == "approval")
        assert approval["branches"] == [
            {"step": "route", "label": "express", "steps": ["fast"]},
            {"step": "route", "label": "standard", "steps": ["slow"]},
        ]
        assert c.get("/api/v1/annotations", params={"contains": '{"a": 1}'}).json() == {
            "items": [],
            "next_cursor": None,
        }
        assert c.get("/api/v1/annotations", params={"contains": "{"}).status_code == 422
        tid = c.post("/api/v1/tasks", json={"name": "greet", "context": {"who": "m"}}).json()[
            "task_id"
        ]
        wait_for(c, tid, "complete")
        health = c.get("/health").json()
        assert health == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
        text = c.get("/metrics").text
        assert 'tasker_tasks{name="greet",status="complete"} 1.0' in text
        assert 'tasker_tasks{name="shipping",status="error"} 0.0' in text  # zeros are there
        assert 'tasker_steps{status="complete",step="say",task="greet"} 1.0' in text or (
            'tasker_steps{task="greet",step="say",status="complete"} 1.0' in text
        )
        assert "tasker_metrics_scrape_ok 1.0" in text
        # `serve --worker` runs the engine here: the worker's series are served beside.
        assert 'tasker_attempts_total{step="say",task="greet"} 1.0' in text


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b'{"name": "greet", "context": ', 400, "not valid JSON"),
        (b'{"name": "greet", "context": []}', 422, "context"),
        (b'{"name": 5}', 422, "name"),
        (b'{"name": "os.system", "context": {}}', 422, "no task handler named 'os.system'"),
        (b'{"name": "greet", "context": {"who": 5}}', 422, "who"),
        (b'{"name": "greet", "context": {"who": "x"}, "extra": 1}', 422, "extra"),
        (b'{"name": "greet", "context": {"who": "a\\u0000b"}}', 422, "U+0000"),
    ],
)
def test_bad_bodies_are_4xx_naming_the_problem_and_store_nothing(
    server: Server, body: bytes, status: int, words: str
) -> None:
    """Given a malformed body, a wrong type, an unknown task name, a schema violation, an
    unknown field or an unstorable character, then a 4xx problem names it and no task
    is stored."""
    with server.client() as c:
        r = c.post("/api/v1/tasks", content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith(PROBLEM)
        problem = r.json()
        assert {"type", "title", "status", "detail"} <= set(problem)
        assert words in problem["detail"] or words in str(problem.get("errors"))
        assert c.get("/api/v1/tasks").json()["items"] == []


def test_huge_body_is_413_and_stores_nothing(server: Server) -> None:
    """Given the 1 MiB default limit, when a 2 MiB body is posted (declared, and then
    streamed without a length), then 413 problems, and nothing is stored."""
    big = b'{"name": "greet", "context": {"who": "' + b"x" * (2 * 1024 * 1024) + b'"}}'
    with server.client() as c:
        r = c.post("/api/v1/tasks", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "limit" in r.json()["detail"]

        def chunks():
            for i in range(0, len(big), 65536):
                yield big[i : i + 65536]

        r = c.post("/api/v1/tasks", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
        assert c.get("/api/v1/tasks").json()["items"] == []
