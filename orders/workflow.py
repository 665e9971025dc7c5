"""The order workflow, as a Celery canvas:

    charge_payment → create_shipment → chord(send_confirmation_email,
                                             send_confirmation_sms,
                                             record_sales) → confirm_order

with handle_order_failure as the error callback of every step. Each step's task id is
chosen up front and stored on a WorkflowStep row in the checkout transaction, so the
order page, the API and the admin follow the workflow from the database. The same
transaction records the six tasks in the task history: the workers that send them on
write nothing for that (RECORDED_HEADER).
"""

import logging
import uuid
from collections.abc import Collection, Mapping

from celery import chain, chord, states
from celery.canvas import Signature
from django.db import transaction

from notifications import services as notifications
from tasks_admin import history
from tasks_admin.history import RECORDED_HEADER, RETRY_OF_HEADER

from . import stock, tasks
from .errors import WorkflowError
from .models import Order, Shipment, WorkflowStep

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


def build_workflow(
    order_id: str,
    task_ids: dict[str, str],
    skip: Collection[str] = (),
    replaces: Mapping[str, str] | None = None,
    recorded: bool = False,
) -> Signature | None:
    """The canvas for an order, leaving out the steps in `skip` (those that already succeeded).

    `replaces` maps a step to the task id it runs again: the task history links the two.
    `recorded`: its tasks are in the task history already (RECORDED_HEADER).
    """

    def signature(task) -> Signature:
        sig = task.si(order_id).set(task_id=task_ids[task.step])
        if replaces and task.step in replaces:
            sig.set(headers={RETRY_OF_HEADER: replaces[task.step]})
        elif recorded:
            sig.set(headers={RECORDED_HEADER: True})
        return sig

    parts = [signature(task) for task in CHAIN if task.step not in skip]
    header = [signature(task) for task in CHORD_HEADER if task.step not in skip]
    if CHORD_CALLBACK.step not in skip:
        callback = signature(CHORD_CALLBACK)
        parts.append(chord(header, callback) if header else callback)
    if not parts:
        return None
    return chain(*parts).on_error(ERROR_CALLBACK.si(order_id))


def start_workflow(order: Order) -> None:
    """Create the order's steps, record their tasks and send the workflow once the surrounding
    transaction commits."""
    steps = create_steps(order)
    task_ids = {step.name: step.task_id for step in steps}
    workflow = build_workflow(str(order.pk), task_ids, recorded=True)
    _record(order, task_ids)

    def send() -> None:
        if not publish(order, workflow):  # nothing was sent: nothing is queued
            history.forget_planned(task_ids.values())

    transaction.on_commit(send)


def _record(order: Order, task_ids: dict[str, str]) -> None:
    """The workflow's tasks in the history (queued), as the workers would have written them on
    sending each task (the chord's group id is recorded when its tasks start)."""
    root = task_ids[CHAIN[0].step]
    parent = {task.step: previous.step for previous, task in zip(CHAIN, CHAIN[1:], strict=False)}
    parent |= {task.step: CHAIN[-1].step for task in CHORD_HEADER}
    history.record_planned(
        history.PlannedTask(
            task_id=task_ids[task.step],
            task_name=task.name,
            args=[str(order.pk)],
            order_id=order.pk,
            root_id=root,
            parent_id=task_ids[parent[task.step]] if task.step in parent else "",
            chord_id=task_ids[CHORD_CALLBACK.step] if task in CHORD_HEADER else "",
        )
        for task in STEP_TASKS
    )


def continue_workflow(order_id: str) -> list[str]:
    """Send an order's workflow again from where it stopped; return the steps sent.

    Steps that succeeded are not re-run. Each re-run step gets a new task id, linked
    to the one it replaces, and messages the provider refused may be tried again. A
    failed order takes its stock off sale again first (and is refused if the stock is
    gone); a cancelled or confirmed order cannot continue.
    """
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.status == Order.Status.CONFIRMED:
            raise WorkflowError(f"Order {order.number} is already confirmed.")
        if order.status == Order.Status.CANCELLED:
            raise WorkflowError(f"Order {order.number} was cancelled ({order.failure_reason}); it cannot continue.")
        if order.status == Order.Status.FAILED:
            stock.reserve_again(order)
            order.status, order.failure_reason = Order.Status.PROCESSING, ""
            order.save(update_fields=["status", "failure_reason", "updated_at"])
            Shipment.objects.filter(order=order).update(status=Shipment.Status.READY)

        notifications.reopen_failed(order.pk)
        steps = list(order.steps.all())
        done = {step.name for step in steps if step.state == states.SUCCESS}
        if order.sales_recorded_at is None:
            done.discard("record_sales")  # the failure path took the sales back out
        rerun = [step for step in steps if step.name not in done]
        replaces = {step.name: step.task_id for step in rerun}
        for step in rerun:
            step.task_id, step.state, step.error = str(uuid.uuid4()), states.PENDING, ""
            step.started_at = step.finished_at = None
        WorkflowStep.objects.bulk_update(rerun, ["task_id", "state", "error", "started_at", "finished_at"])
        workflow = build_workflow(str(order.pk), {step.name: step.task_id for step in steps}, done, replaces)
        if workflow is not None:
            transaction.on_commit(lambda: publish(order, workflow))
    return [step.name for step in rerun]


def publish(order: Order, workflow: Signature) -> bool:
    """Send the workflow to the broker. A broker outage must not fail the checkout that
    called this: the order is kept and stays pending until the stuck-workflow recovery
    job (orders/maintenance.py) sends it."""
    try:
        workflow.apply_async()
    except Exception:
        logger.exception("Could not send the workflow of order %s; it stays pending", order.number)
        return False
    return True
