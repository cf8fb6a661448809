"""Annotations of a batch of outcomes: the steps' own and the handler's `update_annotations`."""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any

from tasker.core import flow
from tasker.core.states import Status
from tasker.definition.handler import TaskHandler
from tasker.engine.outcome import Outcome, describe
from tasker.engine.pass_io import PassIO
from tasker.engine.pass_state import Pass
from tasker.engine.runtime import HandlerStep, HandlerTask
from tasker.engine.threads import ElasticThreads
from tasker.errors import StepTimeoutError
from tasker.settings import Settings
from tasker.store.catalog import Catalog
from tasker.store.steps import inputs_of

log = logging.getLogger("tasker.engine")


class Annotator:
    """Collects the annotations of a pass's outcomes (thread-safe: no state of its own)."""

    def __init__(
        self,
        io: PassIO,
        catalog: Catalog,
        settings: Settings,
        threads: ElasticThreads,
        now: Callable[[], datetime],
    ) -> None:
        self._io = io
        self._catalog = catalog
        self._settings = settings
        self._threads = threads
        self._now = now

    def annotate(self, p: Pass, batch: list[Outcome]) -> None:
        """Call `update_annotations` with the steps just processed, outside any transaction.

        It runs on a thread of its own under the `step_timeout` time limit, the pass
        renewing the lease meanwhile; a failure or a time-out is recorded as a
        `tasker.update_annotations_error` annotation, and the pass goes on.
        """
        wanted = [a for o in batch for a in o.annotations]
        if type(p.reg.handler).update_annotations is not TaskHandler.update_annotations:
            wanted += self._update_annotations(p, batch)
        if not wanted:
            return
        now, task_id = self._now(), p.lease.task_id
        ids = [
            self._io.retrying(
                task_id,
                partial(self._catalog.annotation_type_id, t, now, p.txn.via),
                None,
                self._io.until(p),
            )
            for t, _ in wanted
        ]
        p.annotations = [(int(i or 0), a) for i, (_, a) in zip(ids, wanted, strict=True)]

    def _update_annotations(
        self, p: Pass, batch: list[Outcome]
    ) -> list[tuple[str, dict[str, Any]]]:
        """The annotations the handler's `update_annotations` adds for `batch`."""
        htask = HandlerTask(p.row)
        steps = []
        for o in batch:
            done = Status.COMPLETE.value if o.ok else Status.ERROR.value
            done = flow.LEAVES.get(o.flow or "", done)  # a flow request: where it leaves it
            seen = (o.results, None) if o.ok else (None, o.error)
            # The handler's copies (HandlerStep): what it mutates is not what is stored.
            # It sees each step's inputs as the step's handler did (stored, else the context).
            v = p.views[o.name]
            shown = inputs_of(v, p.row["context"])
            view = replace(v, status=done, results=seen[0], error=seen[1], inputs=shown)
            steps.append(HandlerStep(view))
        failure = self._call_update_annotations(p, htask, steps)
        if failure is None:
            return htask.take_annotations()
        log.error("task %s: update_annotations failed: %s", p.lease.task_id, failure)
        return [("tasker.update_annotations_error", describe(failure))]

    def _call_update_annotations(
        self, p: Pass, htask: HandlerTask, steps: list[HandlerStep]
    ) -> BaseException | None:
        """Run the handler's `update_annotations`; returns what it raised, or None."""
        done: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        sequence = p.sequence()

        def call() -> None:
            try:
                p.reg.handler.update_annotations(htask, sequence, steps)
                done.put(None)
            except BaseException as exc:
                done.put(exc)

        self._threads.submit(call)
        limit = self._settings.step_timeout
        end, renew_every = time.monotonic() + limit, self._settings.lease_seconds / 3
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return StepTimeoutError(
                    f"update_annotations ran past its time limit of {limit:g} s"
                )
            try:
                return done.get(timeout=min(left, renew_every))
            except queue.Empty:
                self._io.renew(p)
