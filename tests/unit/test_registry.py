"""The handler registry: versions, lookups, and registration-time validation."""

from __future__ import annotations

import pytest

from tasker import HandlerFactory, StepHandler, StepTemplate, TaskHandler
from tasker.definition.registry import compile_handler, version_key
from tasker.errors import ConfigurationError, DagCycleError, UnknownTaskError


def noop(task, sequence, step):
    return {}


def handler(name="orders", version=None, templates=None, module=None, **attrs):
    """A TaskHandler subclass made on the fly."""
    body = {"name": name, "step_templates": templates or [StepTemplate(name="s", handler=noop)]}
    if version is not None:
        body["version"] = version
    if module is not None:
        body["__module__"] = module
    body.update(attrs)
    return type("Handler", (TaskHandler,), body)


# -- versions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.9.0", "1.10.0"),
        ("0.9", "0.10"),
        ("1.0.0", "2.0.0"),
        ("1.2", "1.2.1"),
        ("2.0.9", "2.0.10"),
    ],
)
def test_versions_compare_numerically(older, newer):
    assert version_key(older) < version_key(newer)


def test_the_newest_version_is_chosen_numerically_whatever_the_registration_order():
    f = HandlerFactory()
    for v in ["1.9.0", "1.10.0", "1.2.0"]:
        f.register(handler(version=v, templates=[StepTemplate(name=f"v{v}", handler=noop)]))
    assert f.get("orders").version == "1.10.0"
    assert list(f.get("orders").steps) == ["v1.10.0"]
    assert f.get("orders", "1.9.0").version == "1.9.0"


def test_the_default_version_is_0_1_0():
    f = HandlerFactory()
    f.register(handler())
    assert f.get("orders").version == "0.1.0"


def test_an_unknown_task_name_is_an_error_naming_what_is_known():
    f = HandlerFactory()
    f.register(handler(name="known"))
    with pytest.raises(UnknownTaskError, match=r"'ghost'.*known"):
        f.get("ghost")


@pytest.mark.parametrize("name", [["orders"], {"orders": 1}, None, 3])
def test_a_name_that_is_not_a_string_is_an_unknown_task(name):
    """Given a registered task, when it is looked up by a list, a dict, None or a number,
    then the error is UnknownTaskError naming what was asked for, not a TypeError."""
    f = HandlerFactory()
    f.register(handler())
    with pytest.raises(UnknownTaskError, match=r"is a string, not"):
        f.get(name)


@pytest.mark.parametrize("version", [["1.0.0"], {"v": 1}, 1])
def test_a_version_that_is_not_a_string_is_an_unknown_task(version):
    f = HandlerFactory()
    f.register(handler(version="1.0.0"))
    with pytest.raises(UnknownTaskError, match=r"is a string, not"):
        f.get("orders", version)


def test_an_unknown_version_is_an_error_listing_the_registered_versions():
    f = HandlerFactory()
    f.register(handler(version="1.0.0"))
    f.register(handler(version="2.0.0"))
    with pytest.raises(UnknownTaskError, match=r"'3\.0\.0'.*1\.0\.0.*2\.0\.0"):
        f.get("orders", "3.0.0")


def test_names_and_membership():
    f = HandlerFactory()
    f.register(handler(name="b"))
    f.register(handler(name="a"))
    assert f.names() == ["a", "b"]
    assert "a" in f and "c" not in f


# -- re-registration ------------------------------------------------------------------


def test_registering_the_same_class_again_is_fine():
    f = HandlerFactory()
    cls = handler()
    assert f.register(cls) is cls
    assert f.register(cls) is cls
    assert type(f.get("orders").handler) is cls


def test_register_works_as_a_class_decorator():
    f = HandlerFactory()

    @f.register
    class Decorated(TaskHandler):
        name = "decorated"
        step_templates = (StepTemplate(name="s", handler=noop),)

    assert type(f.get("decorated").handler) is Decorated


def test_another_class_taking_a_name_and_version_already_registered_is_an_error():
    f = HandlerFactory()

    class First(TaskHandler):
        name = "orders"
        step_templates = (StepTemplate(name="s", handler=noop),)

    class Second(TaskHandler):
        name = "orders"
        step_templates = (StepTemplate(name="t", handler=noop),)

    f.register(First)
    with pytest.raises(ConfigurationError, match="already registered"):
        f.register(Second)
    assert list(f.get("orders").steps) == ["s"]


def test_a_class_of_the_same_name_from_another_module_does_not_silently_replace_it():
    f = HandlerFactory()
    f.register(handler(module="billing.tasks", templates=[StepTemplate(name="a", handler=noop)]))
    with pytest.raises(ConfigurationError, match="already registered"):
        f.register(
            handler(module="shipping.tasks", templates=[StepTemplate(name="b", handler=noop)])
        )


# -- validation -----------------------------------------------------------------------


def test_steps_are_compiled_in_topological_order():
    reg = compile_handler(
        handler(
            templates=[
                StepTemplate(name="ship", handler=noop, depends_on=["charge"]),
                StepTemplate(name="charge", handler=noop, depends_on=["validate"]),
                StepTemplate(name="validate", handler=noop),
            ]
        )
    )
    assert reg.order == ("validate", "charge", "ship")
    assert list(reg.steps) == ["validate", "charge", "ship"]


def test_duplicate_step_names_are_rejected_by_name():
    cls = handler(
        templates=[StepTemplate(name="dup", handler=noop), StepTemplate(name="dup", handler=noop)]
    )
    with pytest.raises(ConfigurationError, match=r"duplicate step name 'dup'"):
        HandlerFactory().register(cls)


def test_a_cycle_is_rejected_at_registration():
    cls = handler(
        templates=[
            StepTemplate(name="a", handler=noop, depends_on=["b"]),
            StepTemplate(name="b", handler=noop, depends_on=["a"]),
        ]
    )
    with pytest.raises(DagCycleError):
        HandlerFactory().register(cls)


def test_an_unknown_dependency_is_rejected_at_registration():
    cls = handler(templates=[StepTemplate(name="a", handler=noop, depends_on=["ghost"])])
    with pytest.raises(ConfigurationError, match="ghost"):
        HandlerFactory().register(cls)


@pytest.mark.parametrize(
    ("attrs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": 42}, "name"),
        ({"version": ""}, "version"),
        ({"version": 1.0}, "version"),
        ({"step_templates": []}, "step_templates"),
        ({"step_templates": None}, "step_templates"),
    ],
)
def test_a_bad_task_handler_field_is_a_configuration_error_naming_the_field(attrs, field):
    body = {"name": "orders", "step_templates": [StepTemplate(name="s", handler=noop)], **attrs}
    cls = type("Bad", (TaskHandler,), body)
    with pytest.raises(ConfigurationError, match=field):
        HandlerFactory().register(cls)


def test_a_step_that_is_not_a_step_template_is_rejected():
    cls = handler(templates=[{"name": "s", "handler": noop}])
    with pytest.raises(ConfigurationError, match="is not a StepTemplate"):
        HandlerFactory().register(cls)


def test_register_takes_a_class_not_an_instance():
    with pytest.raises(ConfigurationError, match="TaskHandler class"):
        HandlerFactory().register(handler()())


def test_a_handler_class_that_cannot_be_built_without_arguments_is_rejected():
    class NeedsArgs(TaskHandler):
        name = "needs_args"
        step_templates = (StepTemplate(name="s", handler=noop),)

        def __init__(self, db):
            self.db = db

    with pytest.raises(ConfigurationError, match="constructible without arguments"):
        HandlerFactory().register(NeedsArgs)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "nonsense"},
        {"type": "object", "properties": {"a": {"type": 12}}},
        {"type": "object", "required": "a"},
        {"minimum": "zero"},
    ],
)
def test_an_invalid_json_schema_is_rejected(schema):
    with pytest.raises(ConfigurationError, match="invalid context_schema"):
        HandlerFactory().register(handler(context_schema=schema))


def test_a_valid_schema_lists_every_violation_by_path():
    reg = compile_handler(
        handler(
            context_schema={
                "type": "object",
                "required": ["order"],
                "properties": {
                    "order": {
                        "type": "object",
                        "properties": {"id": {"type": "integer"}, "qty": {"minimum": 1}},
                    },
                    "note": {"type": "string"},
                },
            }
        )
    )
    assert reg.schema_errors({"order": {"id": 1, "qty": 1}}) == []
    errors = reg.schema_errors({"order": {"id": "x", "qty": 0}, "note": 5})
    assert len(errors) == 3
    assert any(e.startswith("$.order.id:") for e in errors)
    assert any(e.startswith("$.order.qty:") for e in errors)
    assert any(e.startswith("$.note:") for e in errors)
    assert len(reg.schema_errors({})) == 1


def test_no_schema_means_every_context_is_accepted():
    assert compile_handler(handler()).schema_errors({"anything": [1, 2]}) == []


def test_step_handler_subclasses_functions_and_objects_are_all_accepted():
    class Sub(StepHandler):
        def handle(self, task, sequence, step):
            return {}

    class Duck:
        def handle(self, task, sequence, step):
            return {}

    reg = compile_handler(
        handler(
            templates=[
                StepTemplate(name="sub", handler=Sub),
                StepTemplate(name="duck_class", handler=Duck),
                StepTemplate(name="duck", handler=Duck()),
                StepTemplate(name="fn", handler=noop),
                StepTemplate(name="lam", handler=lambda t, q, s: {}),
            ]
        )
    )
    assert len(reg.steps) == 5


def test_an_after_earlier_than_the_dependencies_allow_and_a_bad_cancel_if_are_refused():
    """Given a step whose after= comes before its dependency's wait can end, or a cancel_if
    that is not callable, When registered, Then ConfigurationError names the problem."""
    from datetime import timedelta

    from tasker import StepTemplate, TaskHandler
    from tasker.definition.registry import compile_handler
    from tasker.errors import ConfigurationError

    def noop(task, sequence, step):  # type: ignore[no-untyped-def]
        return None

    early = [
        StepTemplate(name="a", handler=noop),
        StepTemplate(name="b", handler=noop, depends_on=["a"], wait=timedelta(days=2)),
        StepTemplate(name="c", handler=noop, depends_on=["b"], after=timedelta(days=1)),
    ]
    Early = type("Early", (TaskHandler,), {"name": "early", "step_templates": early})

    with pytest.raises(ConfigurationError, match=r"'c'.*after"):
        compile_handler(Early)

    NotCallable = type(
        "NotCallable",
        (TaskHandler,),
        {"name": "nc", "step_templates": [StepTemplate(name="a", handler=noop)], "cancel_if": 1},
    )

    with pytest.raises(ConfigurationError, match="cancel_if"):
        compile_handler(NotCallable)
