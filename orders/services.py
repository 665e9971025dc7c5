"""What each step of the order workflow does. Every function is safe to run twice.

Each takes an order id (a task's argument), and guards its effect with a business
key: the payment's idempotency key, a one-to-one row, a timestamp set by a
conditional UPDATE, a notification key. A retried or redelivered task therefore
never charges, ships, counts or sends twice.
"""

import base64
import logging
import uuid

from celery import states
from django.db import transaction
from django.utils import timezone

from notifications import services as notifications
from notifications.models import Notification

from . import messages, stock
from .errors import NoFailedStep
from .models import Order, Payment, Shipment, WorkflowStep
from .payments import PaymentDeclined, get_gateway

logger = logging.getLogger(__name__)


class OrderNotActive(Exception):
    """The order was cancelled or failed while this step waited in the queue."""


def charge_payment(order_id: str) -> str:
    """Charge the card once; return the gateway's reference."""
    Order.objects.filter(pk=order_id, status=Order.Status.PENDING).update(
        status=Order.Status.PROCESSING, updated_at=timezone.now()
    )
    payment = Payment.objects.select_related("order").get(order_id=order_id)
    if payment.status == Payment.Status.CAPTURED:
        return payment.gateway_reference
    if payment.status == Payment.Status.DECLINED:
        raise PaymentDeclined(payment.error)
    if payment.order.status not in Order.ACTIVE_STATUSES:
        raise OrderNotActive(f"Order {payment.order.number} is {payment.order.status}; not charging it.")
    try:
        reference = get_gateway().charge(
            token=payment.card_token, amount=payment.amount, idempotency_key=payment.idempotency_key
        )
    except PaymentDeclined as exc:
        Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.DECLINED, error=str(exc))
        raise
    Payment.objects.filter(pk=payment.pk).update(
        status=Payment.Status.CAPTURED, gateway_reference=reference, captured_at=timezone.now()
    )
    return reference


def create_shipment(order_id: str) -> str:
    """Hand the paid order to the warehouse: one Shipment per order, under a reference derived
    from the order, so that running this again inserts nothing and returns the same one."""
    reference = shipment_reference(order_id)
    Shipment.objects.bulk_create([Shipment(order_id=order_id, reference=reference)], ignore_conflicts=True)
    return reference


def shipment_reference(order_id: str) -> str:
    return "SH-" + base64.b32encode(uuid.UUID(str(order_id)).bytes).decode().rstrip("=")


def record_sales(order_id: str) -> bool:
    """Add the order's units to the products' sales statistics, once."""
    return stock.count_sales_once(order_id, timezone.now())


def confirmation_messages(order: Order, lines: list) -> list[Notification]:
    """The confirmation e-mail and SMS of an order, queued at checkout and sent by the chord."""
    email = messages.confirmation_email(order, lines)
    common = {"order": order, "status": Notification.Status.PENDING}
    return [
        Notification(
            idempotency_key=confirmation_key(order.pk, Notification.Channel.EMAIL),
            channel=Notification.Channel.EMAIL,
            recipient=order.email,
            subject=email.subject,
            body=email.body,
            html_body=email.html_body,
            **common,
        ),
        Notification(
            idempotency_key=confirmation_key(order.pk, Notification.Channel.SMS),
            channel=Notification.Channel.SMS,
            recipient=order.phone,
            body=messages.confirmation_sms(order),
            **common,
        ),
    ]


def confirmation_key(order_id, channel: str) -> str:
    return f"order:{order_id}:confirmation:{channel}"


def send_confirmation_email(order_id: str) -> int:
    return notifications.deliver(confirmation_key(order_id, Notification.Channel.EMAIL)).pk


def send_confirmation_sms(order_id: str) -> int:
    return notifications.deliver(confirmation_key(order_id, Notification.Channel.SMS)).pk


def confirm_order(order_id: str) -> bool:
    """The chord's callback: every step ran, the order is confirmed."""
    return bool(
        Order.objects.filter(pk=order_id, status__in=Order.ACTIVE_STATUSES).update(
            status=Order.Status.CONFIRMED, updated_at=timezone.now()
        )
    )


def fail_order(order_id: str) -> str:
    """The workflow's error callback: stop the order, release its stock, take it out of
    the sales statistics, tell the customer.

    A declined payment cancels the order. Any other failed step marks it failed:
    the payment, if taken, stays for staff to continue the workflow or refund.
    Returns the order's status. Raises NoFailedStep when no step is recorded as failed.
    """
    key = f"order:{order_id}:failure:email"
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        stopped_here = order.status in Order.ACTIVE_STATUSES
        if stopped_here and not _failed(order):
            raise NoFailedStep(f"Order {order.number}: the error callback ran, but no step failed.")
        if stopped_here:
            order.status, order.failure_reason = _failure_outcome(order)
            order.save(update_fields=["status", "failure_reason", "updated_at"])
            stock.release(order)
            unrecord_sales(order)
            Shipment.objects.filter(order=order).update(status=Shipment.Status.CANCELLED)
            if order.status == Order.Status.CANCELLED:
                notifications.cancel_queued(order.pk)  # a failed order keeps them: staff may continue it
            logger.warning("Order %s %s: %s", order.number, order.status, order.failure_reason)
    # Tell the customer if this stopped the order, or an earlier run that stopped it could
    # not send yet (a retry); not when the order was stopped otherwise (e.g. stale-cancelled).
    if stopped_here or Notification.objects.filter(idempotency_key=key).exists():
        content = messages.failure_email(order)
        notifications.send_email(
            key=key,
            to=order.email,
            subject=content.subject,
            body=content.body,
            html_body=content.html_body,
            order_id=order.pk,
        )
    return order.status


def unrecord_sales(order: Order) -> bool:
    """Take a stopped order's units back out of the sales statistics (call inside a transaction)."""
    claimed = Order.objects.filter(pk=order.pk, sales_recorded_at__isnull=False).update(sales_recorded_at=None)
    if claimed:
        stock.add_to_products(order.pk, "units_sold", -1)
    return bool(claimed)


def _failed(order: Order) -> bool:
    """A step failed, as recorded at once by the step itself, or the card was declined."""
    return (
        WorkflowStep.objects.filter(order=order, state=states.FAILURE).exists()
        or Payment.objects.filter(order=order, status=Payment.Status.DECLINED).exists()
    )


def _failure_outcome(order: Order) -> tuple[str, str]:
    """The new status and the reason shown to the customer (step errors stay in the admin)."""
    if Payment.objects.filter(order=order, status=Payment.Status.DECLINED).exists():
        return Order.Status.CANCELLED, "your payment was declined."
    steps = WorkflowStep.objects.filter(order=order).order_by("position")
    # Header steps run in parallel: the one that failed may come after one not yet run.
    step = steps.filter(state=states.FAILURE).first() or steps.exclude(state=states.SUCCESS).first()
    if step is None:
        return Order.Status.FAILED, "a technical problem stopped the order."
    return Order.Status.FAILED, f"a technical problem stopped step {step.name}."
