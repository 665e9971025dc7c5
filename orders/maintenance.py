"""Periodic upkeep of orders: cancel those left unpaid, send on the workflows and messages that
stopped moving, and settle the task history a dead worker left behind.

Both jobs may run twice (at-least-once delivery) and beside a worker that is progressing the
same order, so each order is changed in its own transaction, through the state machine's
conditional transitions (orders/lifecycle.py): whoever moves an order first wins, and the
other finds it moved on.
"""

import logging
from datetime import timedelta

from celery import states
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Q, QuerySet
from django.utils import timezone

from notifications import services as notifications
from notifications.tasks import deliver_message
from tasks_admin import history
from tasks_admin.models import TaskRecord

from . import cancellation, cancellation_workflow, services
from .errors import OrderActionRefused
from .models import Order, WorkflowStep
from .selectors import stuck_orders

logger = logging.getLogger(__name__)

BATCH_SIZE = 100
STALE_STATUSES = (Order.Status.PENDING, Order.Status.FAILED)  # never paid, the charge not under way
STALE_JOB = "job:cancel_stale_orders"


def stale_orders(minutes: int) -> QuerySet[Order]:
    """Orders placed over `minutes` ago that were never paid and whose charge is not at the
    gateway (a processing order is charged, declined or failed by its own task)."""
    return Order.objects.filter(status__in=STALE_STATUSES, created_at__lt=timezone.now() - timedelta(minutes=minutes))


def cancel_stale_orders(minutes: int | None = None, batch_size: int = BATCH_SIZE) -> dict[str, int]:
    """Cancel unpaid orders older than STALE_ORDER_MINUTES: their stock is released and their
    customers told (by the cancellation's own message). Returns how many were cancelled (or, for
    a failed order, how many cancellations were started)."""
    minutes = settings.STALE_ORDER_MINUTES if minutes is None else minutes
    reason = f"it was not paid within {minutes:g} minutes."
    cancelled, after = 0, None
    while True:  # keyset batches by primary key: an order a worker moved on is not read again
        batch = stale_orders(minutes).order_by("pk")
        if after is not None:
            batch = batch.filter(pk__gt=after)
        rows = list(batch.values_list("pk", "status")[:batch_size])
        if not rows:
            break
        cutoff = Q(created_at__lt=timezone.now() - timedelta(minutes=minutes))
        for order_id, status in rows:
            if status == Order.Status.FAILED:
                cancelled += _cancel_failed(order_id, reason)
            else:
                cancelled += services.cancel_order(order_id, reason=reason, actor=STALE_JOB, condition=cutoff)
        after = rows[-1][0]
    return {"cancelled": cancelled}


def _cancel_failed(order_id, reason: str) -> bool:
    """A failed order goes through the cancellation workflow, not straight to cancelled: its refund
    step asks the gateway by the charge's key, so a charge that went through after the order failed
    is refunded rather than kept (tests/unit/test_maintenance.py, the failed order's test)."""
    try:
        return cancellation.request(order_id, actor=STALE_JOB, note=reason, reason=reason)
    except OrderActionRefused as exc:  # moved on meanwhile (staff sent its charge again)
        logger.info("Stale order %s not cancelled: %s", order_id, exc)
        return False


def stuck_workflows(minutes: int) -> QuerySet[Order]:
    """Active orders whose workflow has not moved for `minutes`, except those past
    STALE_ORDER_MINUTES unpaid: they are cancelled, not charged late."""
    stale = stale_orders(settings.STALE_ORDER_MINUTES).values("pk")
    return stuck_orders(minutes).exclude(pk__in=stale)


def stuck_cancellations(minutes: int) -> QuerySet[Order]:
    """Orders being cancelled whose cancellation has not moved for `minutes` (its canvas was never
    sent: the broker was down), except those with a failed step waiting for staff (a declined
    refund is a dead letter, not something to ask the gateway again every few minutes)."""
    failed = TaskRecord.objects.about_outer(Order).filter(
        task_name__in=cancellation_workflow.TASK_NAMES, state=states.FAILURE, resolved_at__isnull=True
    )
    return stuck_orders(minutes, statuses=(Order.Status.CANCELLING,)).exclude(Exists(failed))


def recover_stuck_workflows(minutes: int | None = None) -> dict[str, list[str]]:
    """Send the unfinished steps of every stuck workflow again, every stuck cancellation, and the
    messages nobody is sending; return {order number: steps sent} (messages under the key "messages").

    Re-sending is safe: each step is idempotent, and one that already succeeded is skipped.
    """
    minutes = settings.STUCK_WORKFLOW_MINUTES if minutes is None else minutes
    settle_task_records(minutes)
    resent: dict[str, list[str]] = {}
    for order_id, number in stuck_workflows(minutes).values_list("pk", "number"):
        with transaction.atomic():
            # Locked and checked again: the order may have moved on meanwhile.
            Order.objects.select_for_update().filter(pk=order_id).first()
            if not stuck_workflows(minutes).filter(pk=order_id).exists():
                continue
            try:
                resent[number] = services.continue_order(order_id, actor="job:recover_stuck_workflows")
            except OrderActionRefused:
                continue
        logger.warning("Order %s was stuck; sent again: %s", number, ", ".join(resent[number]) or "nothing")
    for order_id, number in stuck_cancellations(minutes).values_list("pk", "number"):
        try:
            cancellation.send_again(order_id, actor="job:recover_stuck_workflows", note="stuck: sent again")
        except OrderActionRefused:
            continue  # finished meanwhile
        resent[number] = ["cancellation"]
        logger.warning("Order %s: its cancellation was stuck; sent again", number)
    keys = notifications.stuck(timedelta(minutes=minutes))
    for key in keys:
        deliver_message.delay(key)
    if keys:
        resent["messages"] = keys
        logger.warning("Sent again %d messages nobody was sending", len(keys))
    return resent


def settle_task_records(minutes: int) -> int:
    """Bring the task history of steps that settled over `minutes` ago in line with them; return
    how many records were settled.

    A worker process killed outright loses the task history it had not yet written
    (tasks_admin/writebehind.py): a step whose outcome is recorded (its service wrote it with
    its effect) would otherwise show queued or running in the console for ever.
    """
    cutoff = timezone.now() - timedelta(minutes=minutes)
    settled = WorkflowStep.objects.filter(finished_at__range=(cutoff - timedelta(days=1), cutoff)).exclude(
        state=WorkflowStep.State.PENDING
    )
    count = 0
    for state in (WorkflowStep.State.SUCCESS, WorkflowStep.State.FAILURE, WorkflowStep.State.SKIPPED):
        task_ids = settled.filter(state=state).values_list("task_id", flat=True)
        count += history.settle(task_ids, state, "settled from the order's record: the run's own record was lost")
    if count:
        logger.warning("Settled %d task records of steps whose worker died before writing them", count)
    return count
