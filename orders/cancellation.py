"""Cancelling an order that has not shipped — by its customer (the order page) or by staff (the
order admin) — and the steps of the cancellation workflow (orders/cancellation_workflow.py).

"Shipped" is the order's Shipment: `create_shipment` creates it under the order's row lock while
the order is paid, and `request` checks for it under the same lock, so a cancel racing the
shipment ends one way only — cancelled with nothing shipped, or refused because it shipped
(tests/integration/test_cancellation.py). Each step is idempotent under the order's business keys:
the payment's idempotency key at the gateway (refunded at most once), `stock_released_at`,
`sales_recorded_at` cleared by a conditional UPDATE, the notifications' keys, the transition.

A failed order (its charge failed for good) is cancelled the same way: it never shipped and its
stock was released when it failed, so `release_stock` finds nothing to do; `refund_payment` asks the
gateway by the charge's key, so a charge that went through after all (its reply lost, after the
workflow's own check) is refunded once, and a charge never taken is voided. Its customer is told
once, by the cancellation's e-mail and text.
"""

import logging

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from notifications import services as notifications

from . import cancellation_workflow, lifecycle, messages, stock
from .errors import OrderActionRefused, StepNotAllowed
from .models import Order, OrderEvent, Payment, Shipment
from .payments import get_gateway
from .services import locked, skip_unfinished

logger = logging.getLogger(__name__)
Status = Order.Status

CUSTOMER_REASON = "you cancelled it."
STAFF_REASON = "it was cancelled by our staff."


UNDER_WAY = (Status.CANCELLING, Status.CANCELLED)


class AlreadyShipped(OrderActionRefused):
    """Too late: the order has a shipment."""


def offered(order: Order) -> bool:
    """Whether the order page offers to cancel (the request itself checks again, under the lock)."""
    return order.status not in UNDER_WAY and refusal(order) is None


def refusal(order: Order) -> OrderActionRefused | None:
    """Why this order cannot be cancelled now, said to its customer; None if it can (or is being
    cancelled already: asking again is answered with the cancellation under way)."""
    if order.status in UNDER_WAY:
        return None
    if order.status == Status.CONFIRMED or Shipment.objects.filter(order=order).exists():
        return AlreadyShipped(f"Order {order.number} has already shipped: it can no longer be cancelled.")
    if order.status == Status.PROCESSING:
        return OrderActionRefused(
            f"The payment for order {order.number} is being taken right now: try again in a minute."
        )
    if order.status not in Order.CANCELLABLE:
        return OrderActionRefused(f"Order {order.number} is {order.get_status_display()}: it cannot be cancelled.")
    return None


def request(order_id, *, actor: str, user: AbstractBaseUser | None = None, note: str = "", reason: str = "") -> bool:
    """Move the order to `cancelling` and send the cancellation workflow; False if it was being
    cancelled (or cancelled) already — asking twice starts one workflow. OrderActionRefused
    (AlreadyShipped) says why it cannot be. Audited: who (`actor`, `user`), when, why (`note`);
    `reason` is what the customer is told (by default: they, or staff, cancelled it)."""
    with transaction.atomic():
        order = locked(order_id)  # waits for a create_shipment holding the order: then it sees the shipment
        if order.status in UNDER_WAY:
            return False
        refused = refusal(order)
        if refused is not None:
            raise refused
        reason = reason or (CUSTOMER_REASON if actor.startswith("customer") else STAFF_REASON)
        lifecycle.require(order, lifecycle.REQUEST_CANCEL, actor=actor, user=user, note=note, failure_reason=reason)
        skip_unfinished(order, f"not run: order cancelled by {actor}")
        cancellation_workflow.start(order)
    logger.info("Order %s: cancellation requested by %s", order.number, actor)
    return True


def send_again(order_id, *, actor: str, user: AbstractBaseUser | None = None, note: str = "") -> None:
    """Send an unfinished cancellation again from its first step (staff retrying a dead letter such
    as a declined refund, or the recovery job): every step is idempotent, so what was done is
    not done twice."""
    with transaction.atomic():
        order = locked(order_id)
        if order.status != Status.CANCELLING:
            raise OrderActionRefused(
                f"Order {order.number} is {order.get_status_display()}: no cancellation to resume."
            )
        OrderEvent.objects.create(
            order=order,
            kind="resume_cancel",
            from_status=order.status,
            to_status=order.status,
            user=user,
            actor=actor,
            note=note,
        )
        cancellation_workflow.start(order)


def _cancelling(order_id, doing: str) -> Order:
    order = Order.objects.select_related("payment").get(pk=order_id)
    if order.status not in UNDER_WAY:
        raise StepNotAllowed(f"Order {order.number} is {order.get_status_display()}: {doing}.")
    return order


def refund_payment(order_id: str) -> str:
    """Give the money back through the gateway, once (keyed on the order's charge), or void a
    payment never taken; return what was done."""
    payment = _cancelling(order_id, "not refunding it").payment
    if payment.status in (Payment.Status.REFUNDED, Payment.Status.VOIDED):
        return payment.status
    gateway = get_gateway()
    # Asked of the gateway by the key, not only from our record: a charge whose reply was lost is refunded too.
    charged = payment.status == Payment.Status.CAPTURED or gateway.find_charge(idempotency_key=payment.idempotency_key)
    if charged:
        gateway.refund(idempotency_key=payment.idempotency_key)
        done = {"status": Payment.Status.REFUNDED, "refunded_at": timezone.now()}
    else:
        done = {"status": Payment.Status.VOIDED}
    Payment.objects.filter(pk=payment.pk).exclude(status=Payment.Status.REFUNDED).update(**done)
    return done["status"]


def release_stock(order_id: str) -> bool:
    """Put the order's units back on sale, once."""
    with transaction.atomic():
        return stock.release(_cancelling(order_id, "not releasing its stock"))


def record_cancellation_sales(order_id: str) -> bool:
    """Take the order's units back out of the sales figures if they were counted, once: clearing
    `sales_recorded_at` is the claim (the daily report counts confirmed orders only)."""
    _cancelling(order_id, "not changing its sales figures")
    with transaction.atomic():
        claimed = Order.objects.filter(pk=order_id, status__in=UNDER_WAY, sales_recorded_at__isnull=False).update(
            sales_recorded_at=None
        )
        if claimed:
            stock.add_to_products(order_id, "units_sold", -1)
    return bool(claimed)


def send_cancellation(order_id: str, channel: str) -> int:
    """Queue (once, under its key) and send the cancellation e-mail or text, once."""
    order = _cancelling(order_id, "not telling the customer")
    notifications.queue([messages.cancellation(order, channel)])
    return notifications.deliver(messages.key(order.pk, "cancelled", channel)).pk


def finish(order_id: str) -> bool:
    """The chord's callback: refunded, released, told and counted — the order is cancelled."""
    order = _cancelling(order_id, "not finishing a cancellation")
    with transaction.atomic():
        return lifecycle.move(order, lifecycle.FINISH_CANCEL, actor="workflow:finish_cancellation")
