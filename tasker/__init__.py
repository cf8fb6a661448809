"""tasker: a durable DAG task orchestrator for Python.

Register task handlers whose steps form a DAG, enqueue tasks, and tasker drives
each to completion through a Dramatiq queue, retrying every step with backoff
and keeping every input, result, error and status change in your SQL database.
"""

from tasker import errors
from tasker.app import Tasker
from tasker.control.schedules import ScheduleView
from tasker.core.states import Status
from tasker.core.views import AnnotationView, StepView, TaskView, TransitionView
from tasker.definition.decision import Decision
from tasker.definition.handler import TaskHandler
from tasker.definition.registry import HandlerFactory
from tasker.definition.request import TaskRequest
from tasker.definition.template import StepHandler, StepTemplate
from tasker.engine.observer import Counts, Observer
from tasker.errors import PermanentError, RetryableError, TaskerError

__all__ = [
    "AnnotationView",
    "Counts",
    "Decision",
    "HandlerFactory",
    "Observer",
    "PermanentError",
    "RetryableError",
    "ScheduleView",
    "Status",
    "StepHandler",
    "StepTemplate",
    "StepView",
    "TaskHandler",
    "TaskRequest",
    "TaskView",
    "Tasker",
    "TaskerError",
    "TransitionView",
    "errors",
]

__version__ = "0.1.0"
