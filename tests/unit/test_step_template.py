"""StepTemplate: defaults, validation of every field, and the accepted handler forms."""

from __future__ import annotations

import pytest

from tasker import StepHandler, StepTemplate
from tasker.errors import ConfigurationError


def noop(task, sequence, step):
    return {"fn": True}


def test_defaults_match_the_contract():
    t = StepTemplate(name="s", handler=noop)
    assert t.depends_on == ()
    assert t.dependent_system == "default"
    assert t.description == ""
    assert t.retryable is True
    assert t.retry_limit == 3
    assert t.skippable is False
    assert t.timeout is None


def test_depends_on_is_frozen_into_a_tuple():
    deps = ["a", "b"]
    t = StepTemplate(name="s", handler=noop, depends_on=deps)
    deps.append("c")
    assert t.depends_on == ("a", "b")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "  "}, "name"),
        ({"name": None}, "name"),
        ({"depends_on": "a"}, "depends_on"),
        ({"depends_on": ["a", 3]}, "depends_on"),
        ({"depends_on": ["a", "a"]}, "depends_on"),
        ({"dependent_system": ""}, "dependent_system"),
        ({"dependent_system": 5}, "dependent_system"),
        ({"retryable": "yes"}, "retryable"),
        ({"skippable": 1}, "skippable"),
        ({"retry_limit": 0}, "retry_limit"),
        ({"retry_limit": -2}, "retry_limit"),
        ({"retry_limit": 1.5}, "retry_limit"),
        ({"retry_limit": "3"}, "retry_limit"),
        ({"retry_limit": True}, "retry_limit"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.0}, "timeout"),
        ({"timeout": "5"}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"handler": None}, "handler"),
        ({"handler": 42}, "handler"),
    ],
)
def test_a_bad_field_is_a_configuration_error_naming_the_field(kwargs, field):
    args = {"name": "s", "handler": noop, **kwargs}
    with pytest.raises(ConfigurationError, match=field):
        StepTemplate(**args)


def test_a_boolean_timeout_is_rejected():
    with pytest.raises(ConfigurationError, match="timeout"):
        StepTemplate(name="s", handler=noop, timeout=True)


def test_a_handler_class_without_handle_is_rejected():
    class NoHandle:
        pass

    with pytest.raises(ConfigurationError, match="has no handle"):
        StepTemplate(name="s", handler=NoHandle)


def test_a_handler_class_needing_constructor_arguments_is_rejected():
    class NeedsArgs(StepHandler):
        def __init__(self, client):
            self.client = client

    with pytest.raises(ConfigurationError, match="constructible without arguments"):
        StepTemplate(name="s", handler=NeedsArgs)


def test_a_handler_class_gets_a_fresh_instance_for_every_attempt():
    class Counting(StepHandler):
        def __init__(self):
            self.calls = 0

        def handle(self, task, sequence, step):
            self.calls += 1
            return {"calls": self.calls}

    t = StepTemplate(name="s", handler=Counting)
    assert [t.call(None, None, None) for _ in range(3)] == [{"calls": 1}] * 3


def test_a_handler_instance_is_reused_and_a_function_is_called_as_is():
    class Counting:
        calls = 0

        def handle(self, task, sequence, step):
            self.calls += 1
            return {"calls": self.calls}

    inst = Counting()
    t = StepTemplate(name="s", handler=inst)
    t.call(None, None, None)
    assert t.call(None, None, None) == {"calls": 2}
    assert StepTemplate(name="f", handler=noop).call(None, None, None) == {"fn": True}


def test_the_base_step_handler_must_be_overridden():
    t = StepTemplate(name="s", handler=StepHandler)
    with pytest.raises(NotImplementedError, match=r"StepHandler\.handle"):
        t.call(None, None, None)


def test_templates_are_immutable():
    t = StepTemplate(name="s", handler=noop)
    with pytest.raises(AttributeError):
        t.retry_limit = 9  # type: ignore[misc]


# -- waits, conditions and flow control (issue 9) -------------------------------------


@pytest.mark.parametrize("field", ["wait", "after", "wait_timeout"])
@pytest.mark.parametrize("bad", [-1, "5m", float("inf"), True])
def test_a_negative_or_non_numeric_wait_is_a_configuration_error_naming_it(field, bad):
    """Given a bad wait, after or wait_timeout, Then ConfigurationError names the field."""
    with pytest.raises(ConfigurationError, match=field):
        StepTemplate(name="s", handler=lambda t, q, s: None, **{field: bad})


def test_waits_are_stored_in_seconds():
    """Given a timedelta and plain seconds, Then both are stored as seconds."""
    from datetime import timedelta

    t = StepTemplate(name="s", handler=lambda t, q, s: None, wait=timedelta(hours=1), after=90)
    assert t.timing() == (3600.0, 90.0, None)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"run_if": True}, "run_if"),
        ({"on_failure": "explode"}, "on_failure"),
        ({"max_reattempts": -1}, "max_reattempts"),
        ({"max_reattempts": 1.5}, "max_reattempts"),
    ],
)
def test_bad_flow_settings_are_configuration_errors(kwargs, named):
    """Given a run_if not callable, an unknown on_failure or a bad max_reattempts, Then
    ConfigurationError names it."""
    with pytest.raises(ConfigurationError, match=named):
        StepTemplate(name="s", handler=lambda t, q, s: None, **kwargs)


def _noop(task: object, sequence: object, step: object) -> None:
    return None


def test_transactional_defaults_to_false_and_takes_a_database() -> None:
    assert StepTemplate(name="s", handler=_noop).transactional is False
    t = StepTemplate(name="s", handler=_noop, transactional=True, database="sqlite:///x.db")
    assert t.transactional is True


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"database": "sqlite:///x.db"}, "database= is for a transactional step"),
        ({"transactional": True, "database": 42}, "database= takes a URL"),
        ({"transactional": True, "database": "::not a url::"}, "cannot parse database="),
        ({"transactional": "yes"}, "transactional must be a boolean"),
        ({"transactional": True, "for_each": lambda t, s: []}, "cannot be transactional"),
    ],
)
def test_bad_transactional_fields_are_configuration_errors(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        StepTemplate(name="s", handler=_noop, **kwargs)  # type: ignore[arg-type]
