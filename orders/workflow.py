"""The order workflow, as a Celery canvas:

    charge_payment → chord(create_shipment, record_sales) → confirm_order → group(send_confirmation_email,
                                                                                  send_confirmation_sms)

handle_order_failure is the error callback of the fulfilment steps (charge, shipment, sales,
confirmation); the two messages follow from the confirmation and have none: a message that
fails for good is a dead letter for staff, never a reason to stop a paid order.

Each fulfilment step's task id is chosen up front and stored on its WorkflowStep row in the
checkout's transaction, which also records all six tasks in the task history; the canvas is
sent once that transaction commits. Signatures are built from task names, so this module
imports no task module (orders/tasks.py imports the services that import this).
"""

import logging
import uuid
from collections.abc import Collection, Mapping

from celery import chain, chord, current_app, group
from celery.canvas import Signature
from django.db import transaction

from tasks_admin import backend, history, logcontext
from tasks_admin.history import RECORDED_HEADER, RETRY_OF_HEADER

from .models import Order, WorkflowStep

logger = logging.getLogger(__name__)

CHARGE = "charge_payment"
FULFIL = ("create_shipment", "record_sales")  # the chord's header: in parallel, once paid
CONFIRM = "confirm_order"  # the chord's callback
STEPS = (CHARGE, *FULFIL, CONFIRM)  # the order's WorkflowStep rows, in order
MESSAGES = ("send_confirmation_email", "send_confirmation_sms")  # sent once the order is confirmed
ON_ERROR = "handle_order_failure"


def task_name(step: str) -> str:
    return f"orders.tasks.{step}"


TASK_NAMES = frozenset(task_name(step) for step in (*STEPS, *MESSAGES, ON_ERROR))


def create_steps(order: Order) -> dict[str, str]:
    """The order's WorkflowStep rows, each with the id its task will run under: {step: task id}."""
    steps = WorkflowStep.objects.bulk_create(
        WorkflowStep(order=order, name=name, position=position, task_id=str(uuid.uuid4()))
        for position, name in enumerate(STEPS)
    )
    return {step.name: step.task_id for step in steps}


def build(
    order_id: str,
    task_ids: Mapping[str, str],
    done: Collection[str] = (),
    replaces: Mapping[str, str] | None = None,
    recorded: bool = False,
) -> Signature:
    """The canvas for an order, leaving out the fulfilment steps in `done`.

    `task_ids` names the id of every step and message to send; `replaces` maps a step to the
    task id it runs again (the task history links the two); `recorded`: the tasks are recorded
    in the task history by the caller's transaction (RECORDED_HEADER), which then also writes
    the chord's counter (backend.planned_chord): the charge's worker does not.
    """

    def signature(step: str) -> Signature:
        headers = {RETRY_OF_HEADER: replaces[step]} if replaces and step in replaces else {}
        if recorded:
            headers[RECORDED_HEADER] = True
        return current_app.signature(
            task_name(step), args=(order_id,), immutable=True, task_id=task_ids[step], headers=headers
        )

    confirm = signature(CONFIRM)
    confirm.link(group(signature(message) for message in MESSAGES))
    parts = [signature(CHARGE)] if CHARGE not in done else []
    header = [signature(step) for step in FULFIL if step not in done]
    if header:
        parts.append(backend.planned_chord(header, confirm) if recorded else chord(header, confirm))
    else:
        parts.append(confirm)
    return chain(*parts).on_error(current_app.signature(task_name(ON_ERROR), args=(order_id,), immutable=True))


def start(order: Order) -> None:
    """Create the order's steps, record its workflow's tasks and its chord's counter, and send
    the workflow once the surrounding transaction commits."""
    task_ids = create_steps(order) | {message: str(uuid.uuid4()) for message in MESSAGES}
    workflow = build(str(order.pk), task_ids, recorded=True)
    _record(order, task_ids)

    def send() -> None:
        if not publish(order, workflow):  # nothing was sent: nothing is queued
            history.forget_planned(task_ids.values())
            backend.forget_planned_chord(task_ids[CONFIRM])

    transaction.on_commit(send)


def _record(order: Order, task_ids: Mapping[str, str]) -> None:
    """The workflow's tasks in the history, as the workers would have written them on sending
    each task: the charge queued, the rest waiting for the steps before them."""
    parent = {step: CHARGE for step in FULFIL} | {message: CONFIRM for message in MESSAGES}
    record_planned(order, task_ids, CHARGE, parent, chord={step: CONFIRM for step in FULFIL})


def record_planned(
    order: Order, task_ids: Mapping[str, str], root: str, parent: Mapping[str, str], chord: Mapping[str, str]
) -> None:
    """An order's canvas in the task history before it is sent ({step: task id}): its `root` step
    queued, each other step under its `parent` step and, in a chord's header, its callback's
    (`chord`). Used by this workflow and the cancellation's (orders/cancellation_workflow.py)."""
    history.record_planned(
        history.PlannedTask(
            task_id=task_ids[step],
            task_name=task_name(step),
            args=[str(order.pk)],
            subject=order,
            root_id=task_ids[root],
            parent_id=task_ids[parent[step]] if step in parent else "",
            chord_id=task_ids[chord[step]] if step in chord else "",
            first=step == root,
        )
        for step in task_ids
    )


def send_rest(order: Order, reason: str) -> list[str]:
    """Send the fulfilment steps that did not succeed, and the rest of the canvas, under new task
    ids once the surrounding transaction commits; return the steps sent.

    The runs they replace are linked to the new ones, and those that never started are marked
    not run, so nothing looks queued that never will be. Call it with the order locked and in a
    status the workflow moves on (the caller, orders/services.py, checks).
    """
    steps = list(order.steps.all())
    done = {step.name for step in steps if step.state == WorkflowStep.State.SUCCESS}
    rerun = [step for step in steps if step.name not in done]
    replaces = {step.name: step.task_id for step in rerun}
    for step in rerun:
        step.task_id, step.state, step.error, step.finished_at = str(uuid.uuid4()), WorkflowStep.State.PENDING, "", None
    WorkflowStep.objects.bulk_update(rerun, ["task_id", "state", "error", "finished_at"])
    task_ids = {step.name: step.task_id for step in steps} | {message: str(uuid.uuid4()) for message in MESSAGES}
    superseded = [*replaces.values(), *history.unstarted(order, map(task_name, MESSAGES))]
    history.skip(superseded, f"not run: replaced by a new run ({reason})")
    workflow = build(str(order.pk), task_ids, done, replaces)
    transaction.on_commit(lambda: publish(order, workflow))
    return [step.name for step in rerun]


def publish(order: Order, workflow: Signature) -> bool:
    """Send the workflow to the broker. A broker outage must not fail the checkout that
    called this: the order is kept and stays pending until the stuck-workflow recovery
    job (orders/maintenance.py) sends it. The order number goes along in the log context, so
    that every task of the workflow logs it and is traced with it (tasks_admin/logcontext.py)."""
    with logcontext.bound(order_number=order.number):
        try:
            workflow.apply_async()
        except Exception:
            logger.exception("Could not send the workflow of order %s; it stays pending", order.number)
            return False
    return True
