"""The order workflow, as a Celery canvas:

    charge_payment → create_shipment → chord(send_confirmation_email,
                                             send_confirmation_sms,
                                             record_sales) → confirm_order

with handle_order_failure as the error callback of every step. Each step's task id is
chosen up front and stored on a WorkflowStep row in the checkout transaction, so the
order page, the API and the admin follow the workflow from the database.
"""

import logging
import uuid
from collections.abc import Collection

from celery import chain, chord
from celery.canvas import Signature
from django.db import transaction

from . import tasks
from .models import Order, WorkflowStep

logger = logging.getLogger(__name__)

CHAIN = (tasks.charge_payment, tasks.create_shipment)
CHORD_HEADER = (tasks.send_confirmation_email, tasks.send_confirmation_sms, tasks.record_sales)
CHORD_CALLBACK = tasks.confirm_order
ERROR_CALLBACK = tasks.handle_order_failure

STEP_TASKS = (*CHAIN, *CHORD_HEADER, CHORD_CALLBACK)
STEP_NAMES = tuple(task.step for task in STEP_TASKS)


def create_steps(order: Order) -> list[WorkflowStep]:
    """The order's WorkflowStep rows, each with the id its task will run under."""
    return WorkflowStep.objects.bulk_create(
        WorkflowStep(order=order, name=name, position=position, task_id=str(uuid.uuid4()))
        for position, name in enumerate(STEP_NAMES)
    )


def build_workflow(order_id: str, task_ids: dict[str, str], skip: Collection[str] = ()) -> Signature | None:
    """The canvas for an order, leaving out the steps in `skip` (those that already succeeded)."""

    def signature(task) -> Signature:
        return task.si(order_id).set(task_id=task_ids[task.step])

    parts = [signature(task) for task in CHAIN if task.step not in skip]
    header = [signature(task) for task in CHORD_HEADER if task.step not in skip]
    if CHORD_CALLBACK.step not in skip:
        callback = signature(CHORD_CALLBACK)
        parts.append(chord(header, callback) if header else callback)
    if not parts:
        return None
    return chain(*parts).on_error(ERROR_CALLBACK.si(order_id))


def start_workflow(order: Order) -> None:
    """Create the order's steps and send its workflow once the surrounding transaction commits."""
    steps = create_steps(order)
    workflow = build_workflow(str(order.pk), {step.name: step.task_id for step in steps})
    transaction.on_commit(lambda: publish(order, workflow))


def publish(order: Order, workflow: Signature) -> bool:
    """Send the workflow to the broker. A broker outage must not fail the checkout that
    called this: the order is kept, stays pending, and the failure is logged."""
    try:
        workflow.apply_async()
    except Exception:
        logger.exception("Could not send the workflow of order %s; it stays pending", order.number)
        return False
    return True
