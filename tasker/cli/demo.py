"""The bundled example workflows that `tasker demo` runs.

An e-commerce order (the seed's flavour): validate, then fan out to fulfilment,
tax and warehouse sync, which join again to ship and notify. One order's tax
service fails twice and is retried with backoff; one order needs a manual fraud
review that an operator resolves. Annotations record an audit trail per order.

Then a user's signup journey of weeks (`UserSignup`), run in a moment on a `FakeClock`:
waits of days, a step polling an outside state with `step.reattempt`, and a task that
pauses when a card is declined until a person resumes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from tasker.core.views import TaskView
from tasker.definition.handler import TaskHandler
from tasker.definition.template import StepHandler, StepTemplate
from tasker.engine.runtime import HandlerStep, HandlerTask, StepSequence
from tasker.errors import PermanentError, RetryableError

ORDER_SCHEMA = {
    "type": "object",
    "required": ["order_id", "region", "line_items"],
    "properties": {
        "order_id": {"type": "integer", "minimum": 1},
        "region": {"enum": ["eu", "us", "apac"]},
        "tax_outages": {"type": "integer", "minimum": 0, "maximum": 5},
        "needs_review": {"type": "boolean"},
        "line_items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sku", "unit_price_cents", "quantity"],
                "properties": {
                    "sku": {"type": "string"},
                    "unit_price_cents": {"type": "integer", "minimum": 0},
                    "quantity": {"type": "integer", "minimum": 1},
                },
            },
        },
    },
}

TAX_BPS = {"eu": 2000, "us": 800, "apac": 1000}


class ValidateOrder(StepHandler):
    """Checks the order and computes its subtotal."""

    def handle(
        self, task: HandlerTask, sequence: StepSequence, step: HandlerStep
    ) -> dict[str, Any]:
        items = step.inputs["line_items"]
        subtotal = sum(i["unit_price_cents"] * i["quantity"] for i in items)
        return {"subtotal_cents": subtotal, "item_count": sum(i["quantity"] for i in items)}


class FraudReview(StepHandler):
    """Flags orders that need a human to look at them."""

    def handle(
        self, task: HandlerTask, sequence: StepSequence, step: HandlerStep
    ) -> dict[str, Any]:
        if step.inputs.get("needs_review"):
            raise PermanentError("order flagged for manual fraud review")
        return {"cleared": "automatically"}


class ReserveInventory(StepHandler):
    """Fulfilment: reserves stock for every line item."""

    def handle(
        self, task: HandlerTask, sequence: StepSequence, step: HandlerStep
    ) -> dict[str, Any]:
        return {"reserved": [i["sku"] for i in step.inputs["line_items"]]}


class CalculateTax(StepHandler):
    """Tax SaaS call: fails `tax_outages` times (HTTP 503), then answers."""

    def handle(
        self, task: HandlerTask, sequence: StepSequence, step: HandlerStep
    ) -> dict[str, Any]:
        if step.attempts <= step.inputs.get("tax_outages", 0):
            raise RetryableError(f"tax service answered 503 (attempt {step.attempts})")
        subtotal = sequence.step("validate_order").results["subtotal_cents"]
        bps = TAX_BPS[step.inputs["region"]]
        return {"tax_cents": (subtotal * bps + 5000) // 10000, "rate_bps": bps}


class SyncWarehouse(StepHandler):
    """Data warehouse sync of the order."""

    def handle(
        self, task: HandlerTask, sequence: StepSequence, step: HandlerStep
    ) -> dict[str, Any]:
        return {"synced_order": step.inputs["order_id"]}


class ShipOrder(StepHandler):
    """Joins fulfilment, tax and warehouse sync: ships and totals the order."""

    def handle(
        self, task: HandlerTask, sequence: StepSequence, step: HandlerStep
    ) -> dict[str, Any]:
        subtotal = sequence.step("validate_order").results["subtotal_cents"]
        tax = sequence.step("calculate_tax").results["tax_cents"]
        return {"tracking": f"TRK-{task.context['order_id']:06d}", "total_cents": subtotal + tax}


class NotifyCustomer(StepHandler):
    """Tells the customer."""

    def handle(
        self, task: HandlerTask, sequence: StepSequence, step: HandlerStep
    ) -> dict[str, Any]:
        return {"emailed": True}


class OrderFulfillment(TaskHandler):
    """An order: validate and review, fan out to fulfilment/tax/warehouse, join to ship."""

    name = "order_fulfillment"
    version = "1.0.0"
    description = "Fulfil an e-commerce order"
    context_schema = ORDER_SCHEMA
    step_templates = (
        StepTemplate(name="validate_order", handler=ValidateOrder, dependent_system="shop"),
        StepTemplate(
            name="fraud_review",
            handler=FraudReview,
            dependent_system="risk",
            depends_on=["validate_order"],
            retryable=False,
        ),
        StepTemplate(
            name="reserve_inventory",
            handler=ReserveInventory,
            dependent_system="fulfilment",
            depends_on=["fraud_review"],
        ),
        StepTemplate(
            name="calculate_tax",
            handler=CalculateTax,
            dependent_system="tax_saas",
            depends_on=["fraud_review"],
            retry_limit=4,
        ),
        StepTemplate(
            name="sync_warehouse",
            handler=SyncWarehouse,
            dependent_system="warehouse",
            depends_on=["fraud_review"],
            skippable=True,
        ),
        StepTemplate(
            name="ship_order",
            handler=ShipOrder,
            dependent_system="fulfilment",
            depends_on=["reserve_inventory", "calculate_tax", "sync_warehouse"],
        ),
        StepTemplate(
            name="notify_customer",
            handler=NotifyCustomer,
            dependent_system="email",
            depends_on=["ship_order"],
        ),
    )

    def update_annotations(
        self, task: HandlerTask, sequence: StepSequence, steps: Sequence[HandlerStep]
    ) -> None:
        """Audit every shipped order, and every retried tax call."""
        for s in steps:
            if s.name == "ship_order" and s.status == "complete":
                task.annotate(
                    "order_audit",
                    {
                        "order_id": task.context["order_id"],
                        "region": task.context["region"],
                        "total_cents": s.results["total_cents"],
                    },
                )
            if s.name == "calculate_tax" and s.status == "error":
                task.annotate(
                    "tax_outage", {"order_id": task.context["order_id"], "attempt": s.attempts}
                )


def sample_orders() -> list[dict[str, Any]]:
    """The demo's orders: plain ones, one with a flaky tax service, one for review."""
    items = [
        [{"sku": "MUG-01", "unit_price_cents": 1299, "quantity": 2}],
        [
            {"sku": "TEE-42", "unit_price_cents": 2500, "quantity": 1},
            {"sku": "CAP-07", "unit_price_cents": 1800, "quantity": 3},
        ],
        [{"sku": "BAG-11", "unit_price_cents": 8900, "quantity": 1}],
        [{"sku": "PEN-03", "unit_price_cents": 350, "quantity": 10}],
        [{"sku": "HAT-09", "unit_price_cents": 2100, "quantity": 2}],
    ]
    regions = ["eu", "us", "apac", "eu", "us"]
    orders = [
        {"order_id": 1001 + i, "region": regions[i], "line_items": items[i]} for i in range(5)
    ]
    orders[2]["tax_outages"] = 2  # the external call that fails twice
    orders[4]["needs_review"] = True  # the step that needs manual resolution
    return orders


# -- a user's signup journey: waits of days on a fake clock, a pause a person lifts ---------


def _welcome(task: HandlerTask, sequence: StepSequence, step: HandlerStep) -> dict[str, Any]:
    return {"sent": f"welcome mail to {task.context['email']}"}


def _check_activation(
    task: HandlerTask, sequence: StepSequence, step: HandlerStep
) -> dict[str, Any]:
    # Polls an outside state: "not yet" twice, a day apart, then the user has activated.
    if step.reattempts < 2:
        step.reattempt(timedelta(days=1))
    return {"activated_after_checks": step.reattempts + 1}


#: The payment service's view of the demo's cards: emails whose card it declines (a
#: person fixes one, then resumes the paused task).
DECLINED_CARDS: set[str] = set()


def _start_trial(task: HandlerTask, sequence: StepSequence, step: HandlerStep) -> dict[str, Any]:
    # A declined card fails for good at once; with on_failure="pause" a person looks.
    if task.context["email"] in DECLINED_CARDS:
        raise PermanentError("card declined")
    return {"trial": "started"}


def _remind(task: HandlerTask, sequence: StepSequence, step: HandlerStep) -> dict[str, Any]:
    return {"sent": "how is it going?"}


def _survey(task: HandlerTask, sequence: StepSequence, step: HandlerStep) -> dict[str, Any]:
    return {"sent": "survey"}


class UserSignup(TaskHandler):
    """A signup journey over weeks (StepperMotor's flavour).

    Welcome at once, check the activation daily, start the trial (pausing for a person if
    the card is declined), remind two days later, and survey fifteen days after signup.
    """

    name = "user_signup"
    one_per_subject = True
    step_templates = [  # noqa: RUF012
        StepTemplate(name="welcome", handler=_welcome),
        StepTemplate(
            name="check_activation",
            handler=_check_activation,
            depends_on=["welcome"],
            max_reattempts=5,
        ),
        StepTemplate(
            name="start_trial",
            handler=_start_trial,
            depends_on=["check_activation"],
            retry_limit=1,
            on_failure="pause",
        ),
        StepTemplate(
            name="remind", handler=_remind, depends_on=["start_trial"], wait=timedelta(days=2)
        ),
        StepTemplate(
            name="survey", handler=_survey, depends_on=["remind"], after=timedelta(days=15)
        ),
    ]


def signups() -> list[dict[str, Any]]:
    """The demo's two users: ann goes straight through, bob's card is declined at first."""
    DECLINED_CARDS.add("bob@example.com")
    return [{"email": "ann@example.com"}, {"email": "bob@example.com"}]


def timeline(view: TaskView) -> str:
    """When each step was done, in days after the task was created (e.g. `welcome d0`)."""
    parts = []
    for name, s in view.steps.items():
        if s.processed_at is None or view.created_at is None:
            parts.append(f"{name} {s.status}")
        else:
            days = (s.processed_at - view.created_at).total_seconds() / 86400
            parts.append(f"{name} d{days:g}")
    return ", ".join(parts)
