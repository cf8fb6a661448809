"""The handler registry: task names and versions mapped to checked DAGs."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

from tasker.core.duration import to_seconds
from tasker.core.waits import after_problems
from tasker.definition.dag import topological_order
from tasker.definition.handler import TaskHandler
from tasker.definition.template import StepTemplate
from tasker.errors import ConfigurationError, UnknownTaskError


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders versions numerically where they are numbers ("1.10" > "1.9")."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"[.\-+]", version)
    )


@dataclass(frozen=True)
class RegisteredTask:
    """A task handler checked at registration: its steps in topological order.

    Attributes:
        name: task name.
        version: handler version.
        handler: an instance of the user's TaskHandler subclass.
        steps: step name -> template, in topological order.
        order: step names in topological order.
        validator: the compiled context schema validator, if any.
        timeout: `TaskHandler.timeout` in seconds (None: no timeout).
        has_on_finish: the handler defines `on_finish`.
    """

    name: str
    version: str
    handler: TaskHandler
    steps: Mapping[str, StepTemplate]
    order: tuple[str, ...]
    validator: Any
    timeout: float | None = None
    has_on_finish: bool = False

    def schema_errors(self, context: Any) -> list[str]:
        """List every violation of the context schema, each naming its JSON path."""
        if self.validator is None:
            return []
        found = sorted(self.validator.iter_errors(context), key=lambda e: list(e.absolute_path))
        return [f"{e.json_path}: {e.message}" for e in found]


def compile_handler(handler_cls: type[TaskHandler]) -> RegisteredTask:
    """Check a TaskHandler subclass and compile it.

    Raises:
        ConfigurationError: a missing name, bad version, bad template, duplicate or
            unknown step, an invalid JSON Schema, an `after=` earlier than the step's
            dependencies' waits allow, a branch naming a step that does not depend
            directly on its decision step, or a `cancel_if` that is not callable.
        DagCycleError: the steps form a cycle.
    """
    if not isinstance(handler_cls, type):
        raise ConfigurationError(f"register() takes a TaskHandler class, got {handler_cls!r}")
    name = getattr(handler_cls, "name", "")
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"{handler_cls.__name__}: `name` must be a non-empty string")
    version = getattr(handler_cls, "version", "0.1.0")
    if not isinstance(version, str) or not version.strip():
        raise ConfigurationError(f"task {name!r}: `version` must be a non-empty string")
    templates = list(getattr(handler_cls, "step_templates", ()) or ())
    if not templates:
        raise ConfigurationError(f"task {name!r}: step_templates is empty")
    by_name: dict[str, StepTemplate] = {}
    for t in templates:
        if not isinstance(t, StepTemplate):
            raise ConfigurationError(f"task {name!r}: {t!r} is not a StepTemplate")
        if t.name in by_name:
            raise ConfigurationError(f"task {name!r}: duplicate step name {t.name!r}")
        by_name[t.name] = t
    order = topological_order(name, {n: t.depends_on for n, t in by_name.items()})
    problems = after_problems(
        order,
        {n: t.depends_on for n, t in by_name.items()},
        {n: t.timing()[:2] for n, t in by_name.items()},
    )
    problems += branch_problems(by_name)
    if problems:
        raise ConfigurationError(f"task {name!r}: " + "; ".join(problems))
    cancel_if = getattr(handler_cls, "cancel_if", None)
    if cancel_if is not None and not callable(cancel_if):
        raise ConfigurationError(
            f"task {name!r}: cancel_if must be a method cancel_if(self, task, sequence) -> bool, "
            f"got {cancel_if!r}"
        )
    timeout = _timeout(name, getattr(handler_cls, "timeout", None))
    on_finish = getattr(handler_cls, "on_finish", None)
    if on_finish is not None and not callable(on_finish):
        raise ConfigurationError(
            f"task {name!r}: on_finish must be a method on_finish(self, task), got {on_finish!r}"
        )
    schema = getattr(handler_cls, "context_schema", None)
    validator = None
    if schema is not None:
        try:
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
        except SchemaError as exc:
            raise ConfigurationError(
                f"task {name!r}: invalid context_schema: {exc.message}"
            ) from exc
        validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    try:
        instance = handler_cls()
    except Exception as exc:
        raise ConfigurationError(
            f"task {name!r}: {handler_cls.__name__}() must be constructible without arguments"
        ) from exc
    return RegisteredTask(
        name=name,
        version=version,
        handler=instance,
        steps={n: by_name[n] for n in order},
        order=tuple(order),
        validator=validator,
        timeout=timeout,
        has_on_finish=on_finish is not None,
    )


def _timeout(name: str, value: Any) -> float | None:
    """`TaskHandler.timeout` in seconds.

    Raises:
        ConfigurationError: it is not None or a positive duration.
    """
    if value is None:
        return None
    try:
        seconds = to_seconds(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"task {name!r}: timeout: {exc}") from None
    if seconds <= 0:
        raise ConfigurationError(f"task {name!r}: timeout must be positive, got {value!r}")
    return seconds


def branch_problems(steps: Mapping[str, StepTemplate]) -> list[str]:
    """The branches that name a step which does not depend directly on their decision step.

    Returns:
        One message per such step (empty: none).
    """
    problems = []
    for name, t in steps.items():
        for label, names in (t.branches or {}).items():
            for target in names:
                other = steps.get(target)
                if other is None:
                    problems.append(
                        f"step {name!r}: branch {label!r} names step {target!r}, which this "
                        "task does not have"
                    )
                elif name not in other.depends_on:
                    problems.append(
                        f"step {name!r}: branch {label!r} names step {target!r}, which does "
                        f"not depend directly on {name!r} (add {name!r} to its depends_on)"
                    )
    return problems


def _identity(cls: type) -> tuple[str, str]:
    # The same class re-imported (a module reload) is the same handler; another is not.
    return cls.__module__, cls.__qualname__


class HandlerFactory:
    """Registry of task handlers; one task name may have several versions.

    Usable as a class decorator: `@factory.register`.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, dict[str, RegisteredTask]] = {}
        self._newest: dict[str, RegisteredTask] = {}  # each enqueue without a version asks
        self._lock = threading.Lock()

    def register(self, handler_cls: type[TaskHandler]) -> type[TaskHandler]:
        """Check and register a task handler class; return it unchanged.

        Registering the same class again is a no-op; another class under a name
        and version already taken is an error.

        Raises:
            ConfigurationError: the handler is invalid or the name and version are taken.
            DagCycleError: its steps form a cycle.
        """
        compiled = compile_handler(handler_cls)
        with self._lock:
            versions = self._tasks.setdefault(compiled.name, {})
            existing = versions.get(compiled.version)
            if existing is not None and _identity(type(existing.handler)) != _identity(handler_cls):
                raise ConfigurationError(
                    f"task {compiled.name!r} version {compiled.version!r} is already registered "
                    f"by {type(existing.handler).__qualname__}"
                )
            versions[compiled.version] = compiled
            self._newest[compiled.name] = versions[max(versions, key=version_key)]
        return handler_cls

    def get(self, name: str, version: str | None = None) -> RegisteredTask:
        """Find a registered task; without a version, the newest.

        Raises:
            UnknownTaskError: nothing is registered under that name (and version), or
                the name or version is not a string.
        """
        # A request's fields come from users: a list or dict here must not be a TypeError.
        if not isinstance(name, str):
            raise UnknownTaskError(f"a task name is a string, not {type(name).__name__} {name!r}")
        if version is not None and not isinstance(version, str):
            raise UnknownTaskError(
                f"task {name!r}: a version is a string, not {type(version).__name__} {version!r}"
            )
        if version is None and name in self._newest:
            return self._newest[name]
        versions = self._tasks.get(name)
        if not versions:
            known = ", ".join(sorted(self._tasks)) or "none"
            raise UnknownTaskError(f"no task handler named {name!r} is registered (known: {known})")
        if version is None:
            return versions[max(versions, key=version_key)]
        try:
            return versions[version]
        except KeyError:
            registered = sorted(versions, key=version_key)
            raise UnknownTaskError(
                f"task {name!r} has no version {version!r} (registered: {registered})"
            ) from None

    def registered(self) -> list[RegisteredTask]:
        """Every registered handler version, by name, then oldest version first."""
        return [
            versions[v]
            for name in sorted(self._tasks)
            for versions in [self._tasks[name]]
            for v in sorted(versions, key=version_key)
        ]

    def names(self) -> list[str]:
        """The registered task names, sorted."""
        return sorted(self._tasks)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._tasks
