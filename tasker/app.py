"""`Tasker`: the application object users create, register handlers on and steer."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

from tasker.control import finishing, retention, schedules, signals, steering
from tasker.control.caller import AfterCommit, check_caller
from tasker.control.enqueue import create_task, create_tasks, tag_request
from tasker.control.schedules import ScheduleView
from tasker.control.sweeper import Sweeper, due_now
from tasker.control.waiting import Waiter
from tasker.core.clock import as_utc, utc_now
from tasker.core.duration import to_seconds
from tasker.core.views import AnnotationView, TaskView, TransitionView
from tasker.definition.handler import TaskHandler
from tasker.definition.registry import HandlerFactory, compile_handler
from tasker.definition.request import TaskRequest
from tasker.engine.observer import Observer, Observers, enqueuing
from tasker.engine.pass_ import Engine
from tasker.errors import InvalidRequestError
from tasker.settings import Settings
from tasker.store import queries
from tasker.store.base import make_store
from tasker.store.catalog import Catalog
from tasker.store.db import Database
from tasker.store.limits import check_limit
from tasker.store.migrate import upgrade
from tasker.transport.broker import Dispatch, make_broker
from tasker.transport.relay import Relay

log = logging.getLogger("tasker")
_O = TypeVar("_O", bound=Observer)


class Tasker:
    """A tasker application: a database, a broker, registered handlers and the engine.

    With no arguments it is the embedded default: a SQLite file `tasker.db` in the
    current folder and Dramatiq's in-process broker; `run_until_idle()` or
    `start()` runs the work in this process. With `database_url=` a PostgreSQL URL
    and `broker_url=` a Redis URL it is the production setup, where `tasker worker`
    processes on any number of machines share the work.

    Args:
        database_url: SQLAlchemy URL (else `TASKER_DATABASE_URL`, else `sqlite:///tasker.db`).
        broker_url: `redis://...` (else `TASKER_BROKER_URL`, else in-process).
        clock: zero-argument callable returning an aware UTC datetime.
        factory: a `HandlerFactory` to share between apps (default: a new one).
        **settings: any other field of `tasker.settings.Settings` (`lease_seconds`,
            `sweep_seconds`, `backoff_base`, `backoff_max`, `max_concurrent_steps`,
            `step_timeout`, `queue_name`, `pool_size`, `retention`, `tracing`).

    Raises:
        ConfigurationError: a setting is invalid.
    """

    def __init__(
        self,
        database_url: str | None = None,
        broker_url: str | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        factory: HandlerFactory | None = None,
        **settings: Any,
    ) -> None:
        self.settings = Settings.load(database_url=database_url, broker_url=broker_url, **settings)
        self._clock = clock or utc_now
        self.factory = factory or HandlerFactory()
        self.db = Database(self.settings.database_url, self.settings.pool_size)
        self.catalog = Catalog(self.db)
        self.store = make_store(self.db)
        self._owner: tuple[int, str] | None = None
        #: What the engine reports to (`observe`): metrics, tracing, counts.
        self.observers = Observers()
        if self.settings.tracing:
            from tasker.engine.tracing import Tracing  # OpenTelemetry, only when asked for

            self.observers.add(Tracing())
        self.dispatch = Dispatch(
            # A worker silent for a lease period has lost its leases too: its fetched
            # messages go back to the queue then (`tasker.transport.held`).
            make_broker(self.settings.broker_url, min(30.0, self.settings.lease_seconds)),
            self.settings.queue_name,
            self._run_message,
            self.now,
            self.observers,
        )
        # Over Redis, enqueue's messages are sent after the commit by a background thread;
        # in-process, a send costs microseconds and `run_until_idle` should see it at once.
        self.relay = Relay(self.dispatch.send_many) if self.dispatch.remote else None
        self._after_commit = AfterCommit(self._announce)
        self.engine = Engine(
            self.db,
            self.store,
            self.factory,
            self.catalog,
            self.settings,
            self.now,
            self.owner,
            self._notify,
            self.observers,
            self._finished,
        )
        self.sweeper = Sweeper(
            self.db,
            self._notify,
            self.now,
            self.settings.sweep_seconds,
            self.settings.lease_seconds,
            chores=self.housekeeping,
            held=self.dispatch.held,
            observer=self.observers,
        )
        self._waiter = Waiter(self.db)
        self._worker: Any = None
        self._stop = threading.Event()
        self._sweep_thread: threading.Thread | None = None

    # -- set-up -------------------------------------------------------------------

    def now(self) -> datetime:
        """The app's clock, as aware UTC."""
        return as_utc(self._clock())

    def owner(self) -> str:
        """This process's lease-owner id (a new one after a fork)."""
        pid = os.getpid()
        if self._owner is None or self._owner[0] != pid:
            self._owner = (pid, f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}")
        return self._owner[1]

    def register(self, handler_cls: type[TaskHandler]) -> type[TaskHandler]:
        """Register a task handler class (see `HandlerFactory.register`).

        Raises:
            ConfigurationError: the handler is invalid, or a transactional step declares
                another database than the app's (`StepTemplate(database=)`): nothing
                is registered.
            DagCycleError: its steps form a cycle.
        """
        self.engine.transactions.check(compile_handler(handler_cls))
        return self.factory.register(handler_cls)

    def observe(self, observer: _O) -> _O:
        """Add an observer of what the engine does in this process (see `tasker.Observer`).

        Returns:
            The observer (so `app.observe(MyObserver())` can be kept).

        Raises:
            ConfigurationError: it is not an `Observer`.
        """
        self.observers.add(observer)
        return observer

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest migration; idempotent."""
        upgrade(self.db)

    # -- enqueue and run ----------------------------------------------------------

    def enqueue(self, request: TaskRequest, connection: Connection | None = None) -> TaskView:
        """Validate and store a task; its message is sent after the commit.

        It returns once the task is committed. Over Redis the message is sent by the
        app's relay thread, batched with others (`stop()` and `close()` send what is
        left); the task's outbox row guarantees it: the sweeper re-sends the message of
        a task whose process died before sending it.

        With `connection` (your SQLAlchemy `Connection` to tasker's database), the task
        is written in your transaction instead, and returns uncommitted: it exists, and
        its message is sent, only once your transaction commits; a rollback leaves no
        task and no message. A connection not in a transaction begins one (commit it
        with `connection.commit()`). An error raised here has written nothing and
        leaves your transaction usable.

        Args:
            request: the task to create.
            connection: your connection, in your transaction (or None: tasker's own).

        Returns:
            The task (for a repeated idempotency key: the first task).

        Raises:
            UnknownTaskError: no handler has that name (and version).
            ContextValidationError: the context breaks the schema; `.errors` lists all.
            InvalidRequestError: another field is invalid; `connection` is not an open
                connection to tasker's database, or is in autocommit mode.
            IdempotencyConflictError: the key was used with a different request.
            DuplicateTaskError: a `one_per_subject` task holds the subject (see
                `TaskHandler.one_per_subject`); `.existing_task_id` names it.
        """
        return self.submit(request, connection)[0]

    def submit(
        self, request: TaskRequest, connection: Connection | None = None
    ) -> tuple[TaskView, bool]:
        """`enqueue`, also telling whether this call created the task.

        Returns:
            The task, and False when it is the first task of a repeated idempotency key.

        Raises:
            The errors of `enqueue`.
        """
        if not isinstance(request, TaskRequest):
            raise InvalidRequestError(
                f"enqueue() takes a TaskRequest, got {type(request).__name__}"
            )
        reg = self.factory.get(request.name, request.version)
        caller = None if connection is None else check_caller(self.db, connection)
        with enqueuing(self.observers, [reg.name]) as ids:
            accepted = create_task(
                self.store, self.db, self.catalog, reg, request, self.now(), caller
            )
            ids.append(accepted.task_id)
        if accepted.view is not None:
            self._announce([accepted.task_id], caller)
            return accepted.view, accepted.created
        return queries.get_task(self.db, accepted.task_id, caller), accepted.created

    def enqueue_many(
        self, requests: Iterable[TaskRequest], connection: Connection | None = None
    ) -> list[TaskView]:
        """Validate and store many tasks at once, all or none (for submitting in bulk).

        Every request is validated before anything is written; the new tasks are then
        written together (on PostgreSQL one statement) and their messages sent after the
        commit, batched. A request whose `idempotency_key` names a stored task, or
        repeats an earlier request of the call, gets that task and stores nothing.

        Args:
            requests: at most `MAX_BATCH` (10,000) `TaskRequest`s.
            connection: your connection: the tasks are written in your transaction
                (see `enqueue`).

        Returns:
            One task per request, in order (as `enqueue` returns it).

        Raises:
            InvalidRequestError: (and each of `enqueue`'s errors) a request is invalid,
                two requests use one key for different requests or ask for the same
                subject of a `one_per_subject` task, or there are too many: nothing is
                stored. `.request_index` says which request it is about. Also for a
                `connection` as `enqueue` refuses it.
        """
        batch = list(requests) if not isinstance(requests, TaskRequest) else None
        if batch is None:
            raise InvalidRequestError("enqueue_many() takes a list of TaskRequests, got one")
        if len(batch) > MAX_BATCH:
            raise InvalidRequestError(
                f"enqueue_many() takes at most {MAX_BATCH} requests, got {len(batch)}"
            )
        items = []
        for index, request in enumerate(batch):
            try:
                if not isinstance(request, TaskRequest):
                    raise InvalidRequestError(
                        f"enqueue_many() takes TaskRequests, got {type(request).__name__}"
                    )
                items.append((self.factory.get(request.name, request.version), request))
            except InvalidRequestError as exc:
                tag_request(exc, index)
                raise
        caller = None if connection is None else check_caller(self.db, connection)
        if not items:
            return []
        with enqueuing(self.observers, [reg.name for reg, _ in items]) as ids:
            accepted = create_tasks(
                self.store, self.db, self.catalog, items, self.now(), caller=caller
            )
            ids += [a.task_id for a in accepted]
        created = [a.task_id for a in accepted if a.view is not None]
        if created:
            self._announce(created, caller)
        return [
            a.view if a.view is not None else queries.get_task(self.db, a.task_id, caller)
            for a in accepted
        ]

    def _announce(self, task_ids: list[int], caller: Connection | None = None) -> None:
        """Send the messages of newly committed tasks (through the relay over Redis).

        Tasks written in a caller's transaction are sent when it commits.
        """
        if caller is not None:
            self._after_commit.add(caller, task_ids)
            return
        if self.relay is not None:
            self.relay.submit(task_ids)
            return
        try:
            self.dispatch.send_many(task_ids)
        except Exception:  # the outbox rows and the sweeper cover a failed send
            log.warning("could not send the messages of tasks %s; the sweeper will", task_ids)

    def run_until_idle(self) -> int:
        """Run, in this process, every waiting message and every task due by the app's clock.

        Returns when nothing more is due now; work scheduled for later stays pending.
        After `stop()` it runs again (a stop ends the background worker, not this
        call's own work); a `stop()` of a worker started meanwhile makes it return
        once the running passes have handed their tasks back.

        Returns:
            The number of engine passes run.
        """
        passes, failed = 0, set()
        if self._worker is None:
            self.engine.resume()  # no background worker: nothing of a stop() is left to keep
        self.housekeeping()  # due schedule ticks and the retention purge, by the app's clock
        if self.relay is not None:
            self.relay.flush()  # so that the drain below takes the messages just enqueued
        while True:
            if self.engine.stopping:
                return passes  # the passes hand their tasks back: running them again would spin
            found = [*self.dispatch.drain(), *due_now(self.db, self.now())]
            ids = [i for i in dict.fromkeys(found) if i not in failed]
            if not ids:
                return passes
            for task_id in ids:
                if not self.engine.run_task(task_id):
                    failed.add(task_id)  # logged; not retried in a loop within this call
            passes += len(ids)

    def start(self, threads: int = 8, sweep: bool = True) -> None:
        """Start a Dramatiq worker (and the sweeper) in background threads of this process."""
        from dramatiq import Worker

        if self._worker is not None:
            return
        self._stop.clear()
        self.engine.resume()
        # Sends wake idle consumers at once; the timeout bounds how late a due delayed
        # message (a retry) moves to the queue, and how long a stop takes.
        self._worker = Worker(
            self.dispatch.broker,
            queues={self.settings.queue_name},
            worker_threads=threads,
            worker_timeout=100,
        )
        self._worker.start()
        if sweep:
            self._sweep_thread = threading.Thread(
                target=self.sweeper.run, args=(self._stop,), name="tasker-sweeper", daemon=True
            )
            self._sweep_thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker and send the messages the relay has not sent yet.

        Running passes start nothing new and hand their tasks back; the relay sends the
        messages of every task enqueued so far, then its thread ends. The app may be
        started again, and `run_until_idle()` runs again after it.
        """
        self._stop.set()
        if self._worker is not None:
            self.engine.stop()
            self._worker.stop(timeout=int(timeout * 1000))
            self._worker = None
        if self._sweep_thread is not None:
            self._sweep_thread.join(timeout)
            self._sweep_thread = None
        if self.relay is not None:  # last: the sweeper's schedule ticks enqueue too
            self.relay.stop(timeout)

    def close(self) -> None:
        """Stop any worker and release the broker and database connections."""
        self.stop()
        self._waiter.close()
        self.dispatch.close()
        self.db.dispose()

    def _run_message(self, task_id: int) -> None:
        self.engine.run_task(int(task_id))

    def _notify_all(self, task_ids: list[int]) -> None:
        """Message each of `task_ids` now (after a steering call woke them)."""
        for task_id in task_ids:
            self._notify(task_id)

    def _notify(self, task_id: int, at: datetime | None = None) -> None:
        try:
            self.dispatch.send(task_id, at)
        except Exception:  # the outbox row and the sweeper cover a failed send
            log.warning(
                "could not send the message for task %s; the sweeper will", task_id, exc_info=True
            )

    # -- inspecting and steering --------------------------------------------------

    def get_task(self, task_id: int) -> TaskView:
        """The task with its steps and annotations.

        Raises:
            TaskNotFoundError: no task has that id.
        """
        return queries.get_task(self.db, task_id)

    def list_tasks(
        self,
        status: str | None = None,
        name: str | None = None,
        limit: int = 100,
        subject: str | None = None,
        before: int | None = None,
    ) -> list[TaskView]:
        """Tasks, newest first, optionally filtered by status, name and subject.

        `before` keeps only tasks whose id is smaller (for paging: the last id seen).

        Raises:
            InvalidRequestError: an unknown status or a bad limit.
        """
        return queries.list_tasks(self.db, status, name, limit, subject, before)

    def history(self, task_id: int) -> list[TransitionView]:
        """The audit trail of a task: every status change of it and its steps.

        Raises:
            TaskNotFoundError: no task has that id.
        """
        return queries.history(self.db, task_id)

    def annotations(
        self,
        annotation_type: str | None = None,
        task_id: int | None = None,
        contains: dict[str, Any] | None = None,
    ) -> list[AnnotationView]:
        """Annotations, filtered by type, task and JSON containment (`{"key": value}`).

        Raises:
            InvalidRequestError: `contains` is not a JSON object.
            TaskNotFoundError: `task_id` is not a valid id.
        """
        return queries.list_annotations(self.db, annotation_type, task_id, contains)

    def signal(self, task_id: int, name: str, payload: Any = None) -> None:
        """Signal event `name` to a task: a step that waits for it (`wait_for=`) goes on.

        The event is stored durably; one signalled before any step waits for it is kept,
        and events of one name are consumed in order, each by one step (the first in the
        task's topological order that waits for that name). A live task is nudged at once;
        a task in `error` or `paused` keeps the event for when it goes on.

        Raises:
            TaskNotFoundError: no task has that id.
            InvalidStateError: the task is final (complete, cancelled, resolved manually).
            InvalidRequestError: no step of the task waits for `name`, or `payload` is not
                a JSON value. Nothing is stored in these cases.
        """
        tid = queries.task_id_of(task_id)
        if signals.signal(self.db, tid, name, payload, self.now()):
            self._notify(tid)

    def limit(
        self, dependent_system: str, concurrency: int | None = None, per_second: int | None = None
    ) -> None:
        """Limit the steps of one dependent system (`StepTemplate(dependent_system=...)`).

        Across all workers on this database, at most `concurrency` such steps run at once
        and at most `per_second` start in any second (by the app's clock). A step held
        back waits `pending` with `waiting_for="limit"` and uses no attempt; a slot freed
        by another step (of any task) wakes it. The limit is stored in the database:
        calling again changes it, and with neither bound lifts it. Workers see a change
        within a second. A `for_each` step counts once: its items share its slot (bound
        them with the step's `concurrency=`).

        Raises:
            ConfigurationError: the system name is empty, or a bound is not an integer of
                at least 1.
        """
        checked = check_limit(dependent_system, concurrency, per_second)
        self.engine.limits.store(dependent_system, checked, self.now())

    def cancel(self, task_id: int) -> TaskView:
        """Cancel the task and its unfinished steps; nothing new starts.

        Raises:
            TaskNotFoundError: no task has that id.
            InvalidTransitionError: the task already finished.
        """
        tid = queries.task_id_of(task_id)
        woken: list[int] = []  # a parent waiting for this task
        steering.cancel(self.db, tid, self.now(), woken=woken)
        self._notify_all(woken)
        self._finish_now([tid])
        return self.get_task(task_id)

    def resolve_step(
        self, task_id: int, step_name: str, results: dict[str, Any] | None = None
    ) -> TaskView:
        """Mark a step `resolved_manually` (with optional results); the task resumes.

        Raises:
            TaskNotFoundError: no task has that id.
            StepNotFoundError: the task has no such step.
            InvalidTransitionError: the task is finished or the step running or done.
            InvalidRequestError: `results` is not a JSON object.
        """
        tid = queries.task_id_of(task_id)
        steering.resolve_step(self.db, tid, step_name, results, self.now())
        self._notify(tid)
        return self.get_task(tid)

    def resume(self, task_id: int) -> TaskView:
        """Let a paused task go on; its steps that ran out of attempts get a fresh budget.

        Raises:
            TaskNotFoundError: no task has that id.
            InvalidStateError: the task is not paused (it is left as it is).
        """
        tid = queries.task_id_of(task_id)
        steering.resume(self.db, tid, self.now())
        self._notify(tid)
        return self.get_task(tid)

    def retry(self, task_id: int) -> TaskView:
        """Give steps in final error a fresh attempt budget, due at once; the task resumes.

        A paused task goes on, also when none of its steps is in final error.

        Raises:
            TaskNotFoundError: no task has that id.
            InvalidTransitionError: the task is finished, or (not paused) has no step in
                final error.
        """
        tid = queries.task_id_of(task_id)
        woken: list[int] = []  # its children retried
        steering.retry(self.db, tid, self.now(), woken=woken)
        self._notify_all([*woken, tid])
        return self.get_task(tid)

    def update_task(
        self, task_id: int, reason: str | None = None, tags: list[str] | None = None
    ) -> TaskView:
        """Change a task's `reason` and/or `tags`; anything else of it stays as it is.

        Raises:
            TaskNotFoundError: no task has that id.
            InvalidRequestError: `reason` is not a string of 1 to 255 characters, or
                `tags` not a list of strings. Nothing is changed.
        """
        tid = queries.task_id_of(task_id)
        steering.update_task(self.db, tid, reason, tags, self.now())
        return self.get_task(tid)

    def update_step(
        self,
        task_id: int,
        step_name: str,
        retry_limit: int | None = None,
        inputs: dict[str, Any] | None = None,
    ) -> TaskView:
        """Change the attempt budget and/or inputs of a step that has not finished.

        Its next attempt uses them (a running attempt keeps the inputs it started with).

        Raises:
            TaskNotFoundError: no task has that id.
            StepNotFoundError: the task has no such step.
            InvalidStateError: the task or the step has finished.
            InvalidRequestError: `retry_limit` is not an integer >= 1 or `inputs` not a
                JSON object. Nothing is changed.
        """
        tid = queries.task_id_of(task_id)
        steering.update_step(self.db, tid, step_name, retry_limit, inputs, self.now())
        self._notify(tid)
        return self.get_task(tid)

    def cancel_step(self, task_id: int, step_name: str) -> TaskView:
        """Cancel one pending or failed step: it never runs, nor can its dependents.

        The task goes on with its other steps, and ends in `error` if the cancelled
        step kept one from running.

        Raises:
            TaskNotFoundError: no task has that id.
            StepNotFoundError: the task has no such step.
            InvalidStateError: the task or the step has finished, or the step is running.
        """
        tid = queries.task_id_of(task_id)
        steering.cancel_step(self.db, tid, step_name, self.now())
        self._notify(tid)
        return self.get_task(tid)

    def asgi(
        self,
        tokens: dict[str, str] | None = None,
        max_body: int | None = None,
        *,
        insecure_no_auth: bool = False,
    ) -> Any:
        """The HTTP API, dashboard and metrics of this app, as an ASGI application.

        Args:
            tokens: bearer token -> scope (`"read"` or `"write"`); default: the
                comma-separated `token:scope` pairs of `TASKER_API_TOKENS`.
            max_body: the largest request body in bytes (default `TASKER_API_MAX_BODY`,
                else 1 MiB); a larger one is answered 413.
            insecure_no_auth: serve without tokens, every caller with the write scope
                (`tasker serve --insecure-no-auth` binds it to 127.0.0.1 only).

        Raises:
            ConfigurationError: no tokens (and not `insecure_no_auth`), a scope that is
                neither read nor write, or a bad body limit.
        """
        from tasker.web import create_app

        return create_app(self, tokens, max_body, insecure_no_auth)

    # -- waiting, schedules and retention (tasker.control.waiting, .schedules, .retention)

    def wait(self, task_id: int, timeout: float | timedelta | None = None) -> TaskView:
        """Block until the task is finished, in `error` or `paused`, and return it.

        It returns once the task is `complete`, `cancelled`, `resolved_manually`, in
        `error` or `paused` (the last two wait for a person). It only waits: workers (or
        `start()`) run the task. On PostgreSQL it sleeps until a notification says the
        task stopped running; on SQLite it reads the task's status by its key, every 5 ms
        at first and every 100 ms at most.

        Args:
            task_id: the task.
            timeout: seconds (or a timedelta) to wait at most; None waits for ever.

        Raises:
            TaskNotFoundError: no task has that id.
            TimeoutError: the task was still running when `timeout` passed.
            InvalidRequestError: `timeout` is not a duration of at least 0.
        """
        tid = queries.task_id_of(task_id)
        seconds = None if timeout is None else _duration("timeout", timeout, allow_zero=True)
        self._waiter.wait(tid, seconds)
        return self.get_task(tid)

    def schedule(
        self,
        name: str,
        request: TaskRequest,
        cron: str | None = None,
        every: float | timedelta | None = None,
        timezone: str = "UTC",
    ) -> ScheduleView:
        """Store a durable schedule (or update the one of that name).

        Each tick enqueues `request` once, with the idempotency key
        `tasker.schedule:<name>:<tick>`, however many workers sweep; a tick missed while
        no worker ran is enqueued once, later missed ticks are not piled up. The first
        tick is the first cron time after now (for `every`: one interval from now); an
        update that keeps the timing keeps the next tick.

        Args:
            name: the schedule's name.
            request: what each tick enqueues (no idempotency_key, no requested_at).
            cron: a five-field cron expression, read in `timezone`.
            every: the interval, in seconds or as a timedelta (instead of `cron`).
            timezone: an IANA time zone name.

        Raises:
            UnknownTaskError: no handler has the request's name (and version).
            ContextValidationError: the request's context breaks the schema.
            InvalidRequestError: a cron expression that does not parse, an `every` that
                is not positive, both or neither of them, an unknown time zone, or
                another invalid field. Nothing is stored.
        """
        return schedules.save(
            self.db, self.factory, name, request, cron, every, timezone, self.now()
        )

    def unschedule(self, name: str) -> bool:
        """Remove a schedule; returns whether there was one of that name."""
        return schedules.remove(self.db, name)

    def schedules(self) -> list[ScheduleView]:
        """Every schedule, by name, each with its `next_tick`."""
        return schedules.list_all(self.db)

    def purge(self, older_than: float | timedelta) -> int:
        """Delete final tasks whose `completed_at` is older than `older_than` ago, now.

        Tasks in `error` are kept. Deletes in batches of 500 tasks, one short
        transaction each, with their steps, edges, history, annotations and outbox rows.

        Returns:
            How many tasks it deleted.

        Raises:
            InvalidRequestError: `older_than` is not a duration of at least 0.
        """
        age = _duration("older_than", older_than, allow_zero=True)
        return retention.purge(self.db, self.now() - timedelta(seconds=age))

    def housekeeping(self) -> None:
        """Enqueue the due schedule ticks and apply `retention`, by the app's clock.

        The sweeper runs it after every sweep, `run_until_idle()` once per call. It
        never raises: a failure is logged and tried again next time.
        """
        now = self.now()
        try:
            finishing.expire_paused(self.db, now)
            finishing.run_due(self.db, self.factory, now, self.settings.lease_seconds)
        except Exception:
            log.exception("timing out paused tasks or finish callbacks failed; next sweep")
        try:
            schedules.fire_due(self.db, now, self.enqueue)
        except Exception:
            log.exception("firing the due schedules failed; trying again next sweep")
        if self.settings.retention is not None:
            cutoff = now - timedelta(seconds=self.settings.retention)
            try:
                retention.purge(self.db, cutoff, max_batches=_PURGE_BATCHES_PER_SWEEP)
            except Exception:
                log.exception("the retention purge failed; trying again next sweep")

    def _finished(self, task_id: int, claimed: datetime) -> None:
        """Run the `on_finish` an engine pass's ending owes (claimed with `claimed`)."""
        finishing.run(self.db, self.factory, task_id, claimed, self.now())

    def _finish_now(self, task_ids: list[int]) -> None:
        """Run the `on_finish` calls a steering call's ending owes; the sweeper's if this fails."""
        try:
            for task_id, claimed in finishing.claim(
                self.db, self.now(), self.settings.lease_seconds, task_ids
            ):
                finishing.run(self.db, self.factory, task_id, claimed, self.now())
        except Exception:
            log.exception("on_finish of tasks %s: left to the sweeper", task_ids)

    def __enter__(self) -> Tasker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def resolve_task(self, task_id: int, *, reason: str = "resolved manually") -> TaskView:
        """Declare a pending or failed task done by hand; it becomes final.

        Its `pending` and `error` steps become `resolved_manually` (a failed step keeps
        its error), the task `resolved_manually` with `completed_at` now, and nothing of
        it runs again; the history records each change with `reason`. Resolving a task
        already resolved changes nothing.

        Raises:
            TaskNotFoundError: no task has that id.
            InvalidRequestError: `reason` is not a string of at most 255 characters.
            InvalidTransitionError: the task is complete or cancelled, or in progress
                (cancel it, or resolve or retry its steps).
        """
        tid = queries.task_id_of(task_id)
        woken: list[int] = []  # a parent waiting for this task
        steering.resolve_task(self.db, tid, reason, self.now(), woken=woken)
        self._notify_all(woken)
        return self.get_task(tid)


#: Most requests one `enqueue_many` call takes (its tasks travel in one statement).
MAX_BATCH = 10_000

#: A sweep purges at most this many batches (of 500), so it gets back to its work soon.
_PURGE_BATCHES_PER_SWEEP = 20


def _duration(field: str, value: Any, allow_zero: bool = False) -> float:
    try:
        seconds = to_seconds(value)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"{field}: {exc}") from None
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise InvalidRequestError(f"{field} must not be negative, got {value!r}")
    return seconds
