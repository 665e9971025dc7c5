"""Periodic upkeep of orders: cancel those left unpaid, send stuck workflows again, settle
the step records a dead worker left behind.

Both jobs may run twice (at-least-once delivery) and beside a worker that is
progressing the same order, so each order is changed in its own transaction, under
its row lock, after checking again that it still qualifies; every effect keeps the
workflow's guards (stock released once, sales taken back once, one e-mail per key).
"""

import logging
import uuid
from datetime import timedelta

from celery import states
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from notifications import services as notifications
from notifications.models import Notification
from shop.errors import PermanentProviderError
from tasks_admin.models import TaskRecord

from . import messages, stock
from .models import Order, Payment, Shipment, WorkflowStep
from .selectors import stuck_orders
from .services import unrecord_sales

logger = logging.getLogger(__name__)

BATCH_SIZE = 100
# Failed orders too: their payment, if any, was never taken, and staff did not continue them.
STALE_STATUSES = (Order.Status.PENDING, Order.Status.PROCESSING, Order.Status.FAILED)
_STALE_REASON_START = "it was not paid within "
STALE_REASON = _STALE_REASON_START + "{minutes} minutes."
STALE_EMAIL_KEY = "order:{order_id}:stale-cancel:email"
# How far back the job looks for stale cancellations whose e-mail is still to be sent.
EMAIL_CATCH_UP = timedelta(days=1)


def stale_orders(minutes: int) -> QuerySet[Order]:
    """Orders placed over `minutes` ago that are not paid, and whose charge is not under way.

    A charge step that started (or is waiting to retry) within the time limit plus the
    longest retry countdown may still reach the gateway: such an order is left to the
    next run rather than cancelled under a charge.
    """
    now = timezone.now()
    charging = WorkflowStep.objects.filter(
        order=OuterRef("pk"),
        name="charge_payment",
        state__in=(states.STARTED, states.RETRY),
        started_at__gte=now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + settings.TASK_RETRY_BACKOFF_MAX),
    )
    return (
        Order.objects.filter(status__in=STALE_STATUSES, created_at__lt=now - timedelta(minutes=minutes))
        .exclude(payment__status=Payment.Status.CAPTURED)
        .exclude(Exists(charging))
    )


def cancel_stale_orders(minutes: int | None = None, batch_size: int = BATCH_SIZE) -> dict[str, int]:
    """Cancel unpaid orders older than STALE_ORDER_MINUTES, release their stock, tell their customers.

    Returns how many orders were cancelled and how many e-mails were sent.
    """
    minutes = settings.STALE_ORDER_MINUTES if minutes is None else minutes
    cancelled, after = 0, None
    while True:  # keyset batches by primary key: an order skipped under its lock is not read again
        batch = stale_orders(minutes).order_by("pk")
        if after is not None:
            batch = batch.filter(pk__gt=after)
        ids = list(batch.values_list("pk", flat=True)[:batch_size])
        if not ids:
            break
        cancelled += sum(cancel_stale_order(order_id, minutes) for order_id in ids)
        after = ids[-1]
    return {"cancelled": cancelled, "emailed": send_stale_cancellation_emails()}


def cancel_stale_order(order_id: uuid.UUID | str, minutes: int) -> bool:
    """Cancel one order if, under its lock, it is still stale; False if a worker moved it on."""
    with transaction.atomic():
        order = Order.objects.select_for_update().filter(pk=order_id).first()
        if order is None or not stale_orders(minutes).filter(pk=order_id).exists():
            return False
        order.status = Order.Status.CANCELLED
        order.failure_reason = STALE_REASON.format(minutes=minutes)
        order.save(update_fields=["status", "failure_reason", "updated_at"])
        stock.release(order)
        unrecord_sales(order)
        Shipment.objects.filter(order=order).update(status=Shipment.Status.CANCELLED)
        notifications.cancel_queued(order.pk)
    logger.info("Order %s cancelled: %s", order.number, order.failure_reason)
    return True


def send_stale_cancellation_emails() -> int:
    """E-mail every recently stale-cancelled customer not yet told; return how many were sent.

    Chosen from the database rather than from this run's cancellations, so an e-mail
    that failed transiently (the task retries) or was cut short by a crash is sent
    by the next attempt. A refused address is logged and not tried again.
    """
    told = Notification.objects.filter(order=OuterRef("pk"), idempotency_key__endswith=":stale-cancel:email").exclude(
        status=Notification.Status.PENDING
    )
    orders = Order.objects.filter(
        status=Order.Status.CANCELLED,
        updated_at__gte=timezone.now() - EMAIL_CATCH_UP,
        failure_reason__startswith=_STALE_REASON_START,
    ).exclude(Exists(told))
    sent = 0
    for order in orders:
        content = messages.stale_cancellation_email(order)
        try:
            notifications.send_email(
                key=STALE_EMAIL_KEY.format(order_id=order.pk),
                to=order.email,
                subject=content.subject,
                body=content.body,
                html_body=content.html_body,
                order_id=order.pk,
            )
        except PermanentProviderError:
            logger.exception("Could not tell the customer of order %s that it was cancelled", order.number)
            continue
        sent += 1
    return sent


def stuck_workflows(minutes: int) -> QuerySet[Order]:
    """Active orders whose workflow has not moved for `minutes`, except:

    - those sent a task in that time: a workflow sent again and still waiting in the
      queue (workers down) is not queued once more on every run;
    - those past STALE_ORDER_MINUTES unpaid: they are cancelled, not charged late.
    """
    sent_lately = TaskRecord.objects.filter(
        order=OuterRef("pk"), sent_at__gte=timezone.now() - timedelta(minutes=minutes)
    )
    return (
        stuck_orders(minutes)
        .exclude(Exists(sent_lately))
        .exclude(pk__in=stale_orders(settings.STALE_ORDER_MINUTES).values("pk"))
    )


def recover_stuck_workflows(minutes: int | None = None) -> dict[str, list[str]]:
    """Send the unfinished steps of every stuck workflow again; return {order number: steps sent}.

    Re-sending is safe: each step is idempotent, and one that already succeeded is skipped.
    """
    from .workflow import continue_workflow  # here: the workflow imports the tasks, which import this module

    minutes = settings.STUCK_WORKFLOW_MINUTES if minutes is None else minutes
    settle_lost_step_records(minutes)
    resent = {}
    for order_id, number in stuck_workflows(minutes).values_list("pk", "number"):
        with transaction.atomic():
            # Locked and checked again: the order may have moved on, or failed (staff continue those).
            Order.objects.select_for_update().filter(pk=order_id).first()
            if not stuck_workflows(minutes).filter(pk=order_id).exists():
                continue
            resent[number] = continue_workflow(str(order_id))
        logger.warning("Order %s was stuck; sent again: %s", number, ", ".join(resent[number]) or "nothing")
    return resent


def settle_lost_step_records(minutes: int) -> int:
    """Record how the steps of finished orders ended where their own record was lost; return
    how many were settled.

    A worker process killed outright loses the step records it had not yet written
    (tasks_admin/writebehind.py), and a step of an order that finished meanwhile would show
    queued or running for ever. A confirmed order ran every step; a step of a stopped order
    that shows running without news for `minutes` has no end recorded: it is marked failed
    (continuing the order re-runs it, and its business key keeps that harmless).
    """
    cutoff = timezone.now() - timedelta(minutes=minutes)
    # Orders that finished in the day before the cutoff: older ones were settled by earlier runs.
    finished = Order.objects.exclude(status__in=Order.ACTIVE_STATUSES).filter(
        updated_at__range=(cutoff - timedelta(days=1), cutoff)
    )
    lost = WorkflowStep.objects.filter(order__in=finished).filter(Q(started_at__lt=cutoff) | Q(started_at__isnull=True))
    succeeded = lost.filter(order__status=Order.Status.CONFIRMED).exclude(state=states.SUCCESS)
    settled = succeeded.update(state=states.SUCCESS, finished_at=timezone.now())
    settled += (
        lost.exclude(order__status=Order.Status.CONFIRMED)
        .filter(state__in=(states.STARTED, states.RETRY))
        .update(state=states.FAILURE, finished_at=timezone.now(), error="No record of how this run ended")
    )
    if settled:
        logger.warning("Settled %d step records of finished orders whose worker died before writing them", settled)
    return settled
