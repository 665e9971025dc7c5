"""The cancellation workflow, as a Celery canvas of its own (orders/workflow.py's rules: built
from task names, the order id the only argument, every step idempotent):

    refund_payment → release_stock → chord(send_cancellation_email, send_cancellation_sms,
                                           record_cancellation_sales) → finish_cancellation

Its tasks are recorded in the task history up front, about the order, so the console lists and
searches them and the order's admin graph draws them (orders/graph.py). Sent once the
transaction that moved the order to `cancelling` commits.
"""

import logging
import uuid
from collections.abc import Mapping

from celery import chain, chord, current_app
from celery.canvas import Signature
from django.db import transaction

from tasks_admin import history

from . import workflow
from .models import Order

logger = logging.getLogger(__name__)

REFUND = "refund_payment"
RELEASE = "release_stock"
TELL_AND_COUNT = ("send_cancellation_email", "send_cancellation_sms", "record_cancellation_sales")  # the chord
FINISH = "finish_cancellation"  # the chord's callback: the order is cancelled
STEPS = (REFUND, RELEASE, *TELL_AND_COUNT, FINISH)


def task_name(step: str) -> str:
    return f"orders.tasks.{step}"


TASK_NAMES = frozenset(task_name(step) for step in STEPS)


def build(order_id: str, task_ids: Mapping[str, str], recorded: bool = False) -> Signature:
    def signature(step: str) -> Signature:
        headers = {history.RECORDED_HEADER: True} if recorded else {}
        return current_app.signature(
            task_name(step), args=(order_id,), immutable=True, task_id=task_ids[step], headers=headers
        )

    return chain(
        signature(REFUND), signature(RELEASE), chord([signature(s) for s in TELL_AND_COUNT], signature(FINISH))
    )


def start(order: Order) -> dict[str, str]:
    """Record the cancellation's tasks and send its canvas once the surrounding transaction
    commits; return {step: task id}."""
    task_ids = {step: str(uuid.uuid4()) for step in STEPS}
    parent = {RELEASE: REFUND} | {step: RELEASE for step in TELL_AND_COUNT}
    workflow.record_planned(order, task_ids, REFUND, parent, chord={step: FINISH for step in TELL_AND_COUNT})
    canvas = build(str(order.pk), task_ids, recorded=True)

    def send() -> None:
        try:
            canvas.apply_async()
        except Exception:  # the broker is down: the order stays cancelling; staff or the recovery job send it
            logger.exception("Could not send the cancellation of order %s", order.number)
            history.forget_planned(task_ids.values())

    transaction.on_commit(send)
    return task_ids
