"""Both native handlers through the engine, with the public API of API.md only."""

from __future__ import annotations

from typing import ClassVar

import pytest

from tasker import StepTemplate, Tasker, TaskHandler, TaskRequest
from tasker.handlers import FFIJsonHandler, PyO3Handler, order_totals
from tasker.testing.clock import FakeClock

pytestmark = pytest.mark.native

ORDER = {
    "line_items": [
        {"sku": "tea", "unit_price_cents": 1999, "quantity": 2},
        {"sku": "mug", "unit_price_cents": 500, "quantity": 1},
    ],
    "tax_rate_bps": 825,
}


@pytest.fixture
def app(tmp_path):
    app = Tasker(database_url=f"sqlite:///{tmp_path}/t.db", clock=FakeClock())
    app.migrate()
    yield app
    app.close()


def native_order_task(dummy):
    class NativeOrder(TaskHandler):
        name = "native_order"
        step_templates: ClassVar[list[StepTemplate]] = [
            StepTemplate(name="pyo3_totals", handler=PyO3Handler(dummy.order_totals)),
            StepTemplate(name="ffi_totals", handler=FFIJsonHandler("order_totals")),
            StepTemplate(
                name="pyo3_dummy",
                handler=PyO3Handler(dummy.handle),
                retry_limit=1,
                depends_on=["pyo3_totals", "ffi_totals"],
            ),
            StepTemplate(
                name="ffi_dummy",
                handler=FFIJsonHandler(),
                retry_limit=1,
                depends_on=["pyo3_totals", "ffi_totals"],
            ),
        ]

    return NativeOrder


def test_results_of_both_handlers_are_stored(app, dummy, library):
    app.register(native_order_task(dummy))
    task = app.enqueue(TaskRequest(name="native_order", context=ORDER))
    app.run_until_idle()
    task = app.get_task(task.task_id)
    assert task.status == "complete"
    expected = order_totals(ORDER)
    for name in ("pyo3_totals", "ffi_totals"):
        assert task.steps[name].status == "complete"
        assert task.steps[name].results == expected
        assert task.steps[name].attempts == 1
    for name in ("pyo3_dummy", "ffi_dummy"):
        assert task.steps[name].results == {"dummy": True}


def test_a_panic_is_a_step_error_and_the_app_goes_on(app, dummy, library):
    app.register(native_order_task(dummy))
    panicking = app.enqueue(TaskRequest(name="native_order", context={**ORDER, "panic": True}))
    app.run_until_idle()
    failed = app.get_task(panicking.task_id)
    assert failed.status == "error"
    for name in ("pyo3_dummy", "ffi_dummy"):
        step = failed.steps[name]
        assert step.status == "error"
        assert step.attempts == 1
        assert "panicked" in step.error["message"]
        assert "panic requested" in step.error["message"]
        assert step.error["error_class"].endswith("NativeHandlerError")
    # The totals ran before the panicking steps; their results are kept.
    assert failed.steps["ffi_totals"].results == order_totals(ORDER)

    # The same app, in the same process, completes the next task.
    ok = app.enqueue(TaskRequest(name="native_order", context=ORDER))
    app.run_until_idle()
    assert app.get_task(ok.task_id).status == "complete"


def test_bad_input_is_a_step_error_naming_the_field(app, dummy, library):
    app.register(native_order_task(dummy))
    bad = {"line_items": [{"sku": "tea", "unit_price_cents": -5, "quantity": 1}], "tax_rate_bps": 0}
    task = app.enqueue(TaskRequest(name="native_order", context=bad))
    app.run_until_idle()
    task = app.get_task(task.task_id)
    for name in ("pyo3_totals", "ffi_totals"):
        assert task.steps[name].status == "error"
        assert "line_items[0].unit_price_cents" in task.steps[name].error["message"]
