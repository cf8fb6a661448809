"""`StepTemplate(transactional=True)`: the handler's writes through `step.connection`
commit in the transaction that records the step's outcome, and only if it is `complete`.

On both stores: a commit, a raise, retries, a write the fence refuses (the lease lost
while the handler ran), a time limit, two transactional steps side by side, a task
enqueued through the step's connection; on SQLite, steering and the sweeper wait behind
the write lock the step's transaction holds. Bad input: `step.connection` on another
step, a commit of the step's connection by the handler, a transactional step declaring
another database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from integration_support import settle, task_class
from sqlalchemy.orm import Session

from tasker import HandlerFactory, StepTemplate, Tasker, TaskRequest
from tasker.engine.transactional import StepTransactions
from tasker.errors import ConfigurationError, UnknownTaskError
from tasker.store import schema as m
from tasker.testing.clock import FakeClock

INSERT = sa.text("INSERT INTO ledger (task_id, step, attempt) VALUES (:t, :s, :a)")


@pytest.fixture
def user_db(backend_url: str) -> Iterator[sa.Engine]:
    """The user's own engine on tasker's database, with a table of theirs."""
    engine = sa.create_engine(backend_url)
    with engine.begin() as c:
        c.execute(
            sa.text(
                "CREATE TABLE ledger (task_id BIGINT NOT NULL, step VARCHAR(32) NOT NULL,"
                " attempt INTEGER NOT NULL)"
            )
        )
    yield engine
    engine.dispose()


def ledger(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT task_id, step, attempt FROM ledger ORDER BY attempt"))
        return [tuple(r) for r in rows]


def book(task: Any, sequence: Any, step: Any) -> None:
    """Write one ledger row for this attempt through the step's transaction."""
    step.connection.execute(INSERT, {"t": task.task_id, "s": step.name, "a": step.attempts})


def run(app: Tasker, clock: FakeClock, templates: list[StepTemplate], **context: Any) -> Any:
    app.register(task_class("booking", templates))
    t = app.enqueue(TaskRequest(name="booking", context=context))
    return settle(app, clock, t.task_id)


def test_the_handlers_writes_commit_with_the_step_and_are_unseen_before(
    backend: Tasker, clock: FakeClock, user_db: sa.Engine
) -> None:
    # Given a transactional step that writes a row, then looks from another connection
    seen: list[list[tuple[Any, ...]]] = []

    def handler(task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        book(task, sequence, step)
        seen.append(ledger(user_db))
        return {"booked": True}

    # When the task runs
    task = run(backend, clock, [StepTemplate(name="book", handler=handler, transactional=True)])

    # Then the row was not visible while the handler ran, and is now, once
    assert seen == [[]]
    assert task.status == "complete"
    assert task.steps["book"].results == {"booked": True}
    assert ledger(user_db) == [(task.task_id, "book", 1)]


def test_a_raise_rolls_the_writes_back_and_a_retry_writes_once(
    backend: Tasker, clock: FakeClock, user_db: sa.Engine
) -> None:
    # Given a transactional step whose first two attempts raise after writing
    def handler(task: Any, sequence: Any, step: Any) -> None:
        book(task, sequence, step)
        if step.attempts < 3:
            raise RuntimeError(f"attempt {step.attempts} failed after writing")

    # When it runs with three attempts
    task = run(
        backend,
        clock,
        [StepTemplate(name="book", handler=handler, transactional=True, retry_limit=3)],
    )

    # Then only the third attempt's write is there
    assert task.status == "complete"
    assert task.steps["book"].attempts == 3
    assert ledger(user_db) == [(task.task_id, "book", 3)]


def test_a_step_out_of_attempts_leaves_no_write(
    backend: Tasker, clock: FakeClock, user_db: sa.Engine
) -> None:
    # Given a transactional step that always fails after writing
    def handler(task: Any, sequence: Any, step: Any) -> None:
        book(task, sequence, step)
        raise RuntimeError("always")

    # When it runs out of attempts
    task = run(
        backend,
        clock,
        [StepTemplate(name="book", handler=handler, transactional=True, retry_limit=2)],
    )

    # Then the task is in error and nothing was written
    assert task.status == "error"
    assert task.steps["book"].error["message"] == "always"
    assert ledger(user_db) == []


def test_a_flow_request_is_not_complete_and_rolls_back(
    backend: Tasker, clock: FakeClock, user_db: sa.Engine
) -> None:
    # Given a transactional step that writes and then skips itself
    def handler(task: Any, sequence: Any, step: Any) -> None:
        book(task, sequence, step)
        step.skip("not needed after all")

    # When it runs
    task = run(backend, clock, [StepTemplate(name="book", handler=handler, transactional=True)])

    # Then the step is skipped and its write is gone
    assert task.status == "complete"
    assert task.steps["book"].status == "skipped"
    assert ledger(user_db) == []


def test_a_write_the_fence_refuses_rolls_everything_back(
    backend: Tasker, clock: FakeClock, user_db: sa.Engine
) -> None:
    # Given a transactional step whose first attempt loses the task's lease while it runs
    # (PostgreSQL: another connection takes it, as a worker after the lease expired;
    # SQLite, where no one else can write meanwhile, inside the step's own transaction)
    steal = sa.update(m.tasks).values(lease_owner="another-worker")

    def handler(task: Any, sequence: Any, step: Any) -> None:
        book(task, sequence, step)
        if step.attempts == 1:
            where = steal.where(m.tasks.c.task_id == task.task_id)
            if backend.db.is_postgres:
                with user_db.begin() as other:
                    other.execute(where)
            else:
                step.connection.execute(where)

    backend.register(
        task_class("booking", [StepTemplate(name="book", handler=handler, transactional=True)])
    )
    t = backend.enqueue(TaskRequest(name="booking"))

    # When the pass records the outcome
    backend.run_until_idle()

    # Then the fence refused it: the step's write is not there, the step is not complete
    assert ledger(user_db) == []
    assert backend.get_task(t.task_id).steps["book"].status == "in_progress"

    # And once the lease has expired the step is retried (worker lost) and writes once
    clock.advance(backend.settings.lease_seconds + 1)
    with user_db.begin() as c:  # the thief gave up (PostgreSQL) - nobody holds it now
        c.execute(
            sa.update(m.tasks)
            .where(m.tasks.c.task_id == t.task_id, m.tasks.c.lease_owner == "another-worker")
            .values(lease_owner=None)
        )
    task = settle(backend, clock, t.task_id)
    assert task.status == "complete"
    assert task.steps["book"].attempts == 2
    assert ledger(user_db) == [(t.task_id, "book", 2)]


def test_an_attempt_past_its_time_limit_rolls_back(
    backend: Tasker, clock: FakeClock, user_db: sa.Engine, release: threading.Event
) -> None:
    # Given a transactional step whose first attempt writes, then outlives its time limit
    def handler(task: Any, sequence: Any, step: Any) -> None:
        book(task, sequence, step)
        if step.attempts == 1:
            release.wait(1.0)

    # When it runs
    task = run(
        backend,
        clock,
        [StepTemplate(name="book", handler=handler, transactional=True, timeout=0.2)],
    )

    # Then the first attempt timed out and left nothing; the second wrote once
    assert task.status == "complete"
    assert task.steps["book"].attempts == 2
    assert ledger(user_db) == [(task.task_id, "book", 2)]


def test_transactional_and_plain_steps_side_by_side(
    backend: Tasker, clock: FakeClock, user_db: sa.Engine
) -> None:
    # Given a diamond whose middle steps are two transactional steps and a plain one
    # (on SQLite the transactional ones run one after the other: one write lock)
    ran: list[str] = []
    templates = [
        StepTemplate(name="a", handler=lambda task, seq, step: ran.append("a")),
        StepTemplate(name="t1", handler=book, depends_on=["a"], transactional=True),
        StepTemplate(name="t2", handler=book, depends_on=["a"], transactional=True),
        StepTemplate(name="p", handler=lambda task, seq, step: ran.append("p"), depends_on=["a"]),
        StepTemplate(name="d", handler=book, depends_on=["t1", "t2", "p"], transactional=True),
    ]

    # When it runs
    task = run(backend, clock, templates)

    # Then every step completed and each transactional one wrote exactly once
    assert task.status == "complete"
    assert sorted(ran) == ["a", "p"]
    assert sorted(r[1] for r in ledger(user_db)) == ["d", "t1", "t2"]


def test_a_task_enqueued_through_the_steps_connection_exists_only_if_it_completes(
    backend: Tasker, clock: FakeClock, user_db: sa.Engine
) -> None:
    # Given a transactional step that enqueues a follow-up task in its transaction, and
    # fails its first attempt afterwards
    followed: list[int] = []
    backend.register(
        task_class(
            "follow_up",
            [StepTemplate(name="f", handler=lambda t, s, st: followed.append(t.context["n"]))],
        )
    )

    def handler(task: Any, sequence: Any, step: Any) -> None:
        backend.enqueue(
            TaskRequest(name="follow_up", context={"n": step.attempts}),
            connection=step.connection,
        )
        if step.attempts == 1:
            raise RuntimeError("failed after enqueueing")

    # When it runs to completion
    task = run(backend, clock, [StepTemplate(name="stage", handler=handler, transactional=True)])
    backend.run_until_idle()

    # Then only the second attempt's follow-up exists, and it ran
    assert task.status == "complete"
    assert followed == [2]
    assert len(backend.list_tasks(name="follow_up")) == 1


def test_a_child_spawned_by_a_transactional_step_commits_with_its_writes(
    backend: Tasker, clock: FakeClock, user_db: sa.Engine
) -> None:
    # Given a transactional step that writes, spawns a child, and fails its first attempt
    backend.register(task_class("child", [StepTemplate(name="c", handler=lambda t, s, st: None)]))

    def handler(task: Any, sequence: Any, step: Any) -> None:
        book(task, sequence, step)
        step.spawn(TaskRequest(name="child", context={"n": step.attempts}), wait=False)
        if step.attempts == 1:
            raise RuntimeError("failed after spawning")

    # When it runs to completion
    task = run(backend, clock, [StepTemplate(name="p", handler=handler, transactional=True)])
    backend.run_until_idle()

    # Then the second attempt's row and child exist, together, and nothing of the first
    children = backend.list_tasks(name="child")
    assert task.status == "complete"
    assert [c.context for c in children] == [{"n": 2}]
    assert ledger(user_db) == [(task.task_id, "p", 2)]
    # And the first attempt failed as its handler did (a spawn waiting for SQLite's write
    # lock, held by the step's own transaction, would have run into the time limit)
    errors = [t.reason for t in backend.history(task.task_id) if t.to_status == "error"]
    assert len(errors) == 1 and "failed after spawning" in errors[0], errors


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "not-landed"])
def test_a_commit_whose_answer_is_lost_is_checked_never_applied_twice(
    backend: Tasker,
    clock: FakeClock,
    user_db: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
    landed: bool,
) -> None:
    # Given a transactional step whose first commit reports a lost connection, after the
    # commit landed or before it was made (as when the database restarts at that moment)
    start = StepTransactions.start
    broken: list[int] = []

    def start_with_a_lost_answer(self: StepTransactions, *args: Any) -> Any:
        held = start(self, *args)
        if held is not None and not broken:
            commit = held.conn.commit

            def commit_then_lose_the_answer() -> None:
                broken.append(1)
                if landed:
                    commit()
                raise sa.exc.OperationalError("COMMIT", {}, Exception("connection lost"))

            held.conn.commit = commit_then_lose_the_answer  # type: ignore[method-assign]
        return held

    monkeypatch.setattr(StepTransactions, "start", start_with_a_lost_answer)

    # When the task runs
    task = run(backend, clock, [StepTemplate(name="book", handler=book, transactional=True)])

    # Then the task row told what happened: a landed commit counts once, a lost one is a
    # failed attempt retried; either way the write is there exactly once
    assert broken == [1]
    assert task.status == "complete"
    assert task.steps["book"].attempts == (1 if landed else 2)
    assert [r[1:] for r in ledger(user_db)] == [("book", 1 if landed else 2)]


def test_a_transactional_step_waiting_for_an_event_writes_its_payload_once(
    backend: Tasker, clock: FakeClock, user_db: sa.Engine
) -> None:
    # Given two transactional steps side by side, one of which waits for an event
    def approve(task: Any, sequence: Any, step: Any) -> None:
        step.connection.execute(
            INSERT, {"t": task.task_id, "s": step.event["by"], "a": step.attempts}
        )

    backend.register(
        task_class(
            "approval",
            [
                StepTemplate(name="book", handler=book, transactional=True),
                StepTemplate(name="approve", handler=approve, wait_for="go", transactional=True),
            ],
        )
    )
    t = backend.enqueue(TaskRequest(name="approval"))
    backend.run_until_idle()

    # When the event comes
    backend.signal(t.task_id, "go", {"by": "ann"})
    task = settle(backend, clock, t.task_id)

    # Then both wrote once, the event step with its payload
    assert task.status == "complete"
    assert sorted(r[1] for r in ledger(user_db)) == ["ann", "book"]


def test_an_orm_session_on_the_steps_connection_joins_its_transaction(
    backend: Tasker, clock: FakeClock, user_db: sa.Engine
) -> None:
    # Given a transactional step writing through an ORM session that it commits, and
    # failing its first attempt afterwards
    def handler(task: Any, sequence: Any, step: Any) -> None:
        with Session(bind=step.connection) as session:
            session.execute(INSERT, {"t": task.task_id, "s": "orm", "a": step.attempts})
            session.commit()  # ends the session's savepoint, not the step's transaction
        if step.attempts == 1:
            raise RuntimeError("failed after the session committed")

    # When it runs
    task = run(backend, clock, [StepTemplate(name="s", handler=handler, transactional=True)])

    # Then only the second attempt's row is there
    assert task.status == "complete"
    assert ledger(user_db) == [(task.task_id, "orm", 2)]


def test_a_transactional_steps_new_annotation_type_is_created_in_its_transaction(
    backend: Tasker, clock: FakeClock, user_db: sa.Engine
) -> None:
    # Given a transactional step that annotates its task with a type never used before
    # (on SQLite the type's row is written through the step's transaction, the only one
    # that can write while it is open)
    def handler(task: Any, sequence: Any, step: Any) -> None:
        book(task, sequence, step)
        task.annotate("booking_audit", {"seat": 7})

    # When it runs
    task = run(backend, clock, [StepTemplate(name="s", handler=handler, transactional=True)])

    # Then the step, its write and the annotation are stored, in the first attempt
    assert task.status == "complete"
    assert task.steps["s"].attempts == 1
    assert [(a.annotation_type, a.annotation) for a in task.annotations] == [
        ("booking_audit", {"seat": 7})
    ]
    assert ledger(user_db) == [(task.task_id, "s", 1)]


def test_transactional_steps_of_many_tasks_run_side_by_side_on_worker_threads(
    backend: Tasker, user_db: sa.Engine
) -> None:
    # Given tasks whose transactional step takes a moment, run by four worker threads (on
    # SQLite their transactions queue for the write lock; the passes must not deadlock)
    def handler(task: Any, sequence: Any, step: Any) -> None:
        book(task, sequence, step)
        time.sleep(0.05)

    backend.register(
        task_class(
            "busy",
            [
                StepTemplate(name="s", handler=handler, transactional=True),
                StepTemplate(name="after", handler=lambda t, s, st: None, depends_on=["s"]),
            ],
        )
    )
    ids = [backend.enqueue(TaskRequest(name="busy", context={"i": i})).task_id for i in range(8)]

    # When the worker runs them
    backend.start(threads=4)
    try:
        done = [backend.wait(i, timeout=60) for i in ids]
    finally:
        backend.stop()

    # Then every task completed with its step's write exactly once
    assert [t.status for t in done] == ["complete"] * 8
    assert sorted(r[0] for r in ledger(user_db)) == sorted(ids)
    assert all(t.steps["s"].attempts == 1 for t in done)


def test_step_connection_on_a_step_that_is_not_transactional_fails_the_attempt(
    backend: Tasker, clock: FakeClock
) -> None:
    # Given a plain step that asks for step.connection
    def handler(task: Any, sequence: Any, step: Any) -> None:
        step.connection.execute(sa.text("SELECT 1"))

    # When it runs
    task = run(backend, clock, [StepTemplate(name="s", handler=handler, retry_limit=1)])

    # Then the attempt failed with an error that says why
    error = task.steps["s"].error
    assert error["error_class"] == "tasker.errors.InvalidStateError"
    assert "not transactional" in error["message"]
    assert "transactional=True" in error["message"]


def test_a_handler_that_commits_the_steps_connection_fails_and_writes_nothing(
    backend: Tasker, clock: FakeClock, user_db: sa.Engine
) -> None:
    # Given a transactional step that commits its connection itself
    def handler(task: Any, sequence: Any, step: Any) -> None:
        book(task, sequence, step)
        step.connection.commit()

    # When it runs
    task = run(
        backend,
        clock,
        [StepTemplate(name="s", handler=handler, transactional=True, retry_limit=1)],
    )

    # Then the commit was refused, the attempt failed and its write was rolled back
    assert task.status == "error"
    assert "do not commit or roll back step.connection" in task.steps["s"].error["message"]
    assert ledger(user_db) == []


def test_a_transactional_step_on_another_database_is_refused_at_registration(
    backend: Tasker, tmp_path: Any
) -> None:
    # Given a transactional step that declares another database than the app's
    other = f"sqlite:///{tmp_path}/elsewhere.db"
    cls = task_class(
        "elsewhere",
        [StepTemplate(name="s", handler=book, transactional=True, database=other)],
    )

    # When it is registered, Then it is refused, naming the step, and nothing is registered
    with pytest.raises(ConfigurationError, match="step 's' is transactional on another"):
        backend.register(cls)
    with pytest.raises(UnknownTaskError):
        backend.factory.get("elsewhere")


def test_a_transactional_step_on_its_apps_database_registers(
    backend: Tasker, clock: FakeClock, user_db: sa.Engine
) -> None:
    # Given a transactional step that declares the app's own database (as an engine)
    templates = [StepTemplate(name="s", handler=book, transactional=True, database=user_db)]

    # When it runs, Then it is accepted and writes once
    task = run(backend, clock, templates)
    assert ledger(user_db) == [(task.task_id, "s", 1)]


def test_a_shared_factorys_step_on_another_database_fails_when_it_starts(
    make_app: Callable[..., Tasker], clock: FakeClock, tmp_path: Any
) -> None:
    # Given a factory that registered the step without an app, then an app using it
    factory = HandlerFactory()
    other = f"sqlite:///{tmp_path}/elsewhere.db"
    factory.register(
        task_class(
            "elsewhere",
            [StepTemplate(name="s", handler=book, transactional=True, database=other)],
        )
    )
    app = make_app(factory=factory)

    # When its task runs
    t = app.enqueue(TaskRequest(name="elsewhere"))
    task = settle(app, clock, t.task_id)

    # Then the step fails for good at its start, saying why, and its handler never ran
    assert task.status == "error"
    assert task.steps["s"].attempts == 1
    assert task.steps["s"].error["error_class"] == "tasker.errors.ConfigurationError"
    assert "another database than tasker's" in task.steps["s"].error["message"]


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_on_sqlite_steering_and_the_sweeper_wait_behind_the_steps_lock(
    backend: Tasker, clock: FakeClock, user_db: sa.Engine, release: threading.Event
) -> None:
    # Given a transactional step that holds SQLite's write lock until released
    entered = threading.Event()

    def handler(task: Any, sequence: Any, step: Any) -> None:
        book(task, sequence, step)
        entered.set()
        release.wait(10)

    backend.register(
        task_class("holder", [StepTemplate(name="s", handler=handler, transactional=True)])
    )
    backend.register(task_class("other", [StepTemplate(name="o", handler=book)]))
    held = backend.enqueue(TaskRequest(name="holder"))
    other = backend.enqueue(TaskRequest(name="other"))
    runner = threading.Thread(target=backend.engine.run_task, args=(held.task_id,))
    runner.start()
    assert entered.wait(10)

    # When a steering call and a sweep are made while it runs
    results: dict[str, Any] = {}

    def call(name: str, fn: Callable[[], Any]) -> threading.Thread:
        def body() -> None:
            try:
                results[name] = fn()
            except Exception as exc:
                results[name] = exc

        thread = threading.Thread(target=body)
        thread.start()
        return thread

    calls = [
        call("cancel", lambda: backend.cancel(other.task_id)),
        call("sweep", backend.sweeper.sweep),
    ]

    # Then they wait (they cannot write while the lock is held) ...
    for thread in calls:
        thread.join(0.3)
    assert not results, results

    # ... and succeed once the step's transaction committed
    release.set()
    runner.join(30)
    for thread in calls:
        thread.join(30)
    assert results["cancel"].status == "cancelled"
    assert isinstance(results["sweep"], int)
    assert backend.get_task(held.task_id).status == "complete"
    assert ledger(user_db) == [(held.task_id, "s", 1)]
