"""What the shop tells a customer about an order, by e-mail and SMS, and under which business key.

Each message follows from a transition of the order (orders/services.py): it is queued as a
Notification in the transaction that makes the transition, so a customer hears of an outcome
only once it is committed, and at most once per key.
"""

from dataclasses import dataclass
from urllib.parse import urlencode

from django.conf import settings
from django.template.loader import render_to_string
from django.urls import reverse

from notifications.models import Notification

from .models import Order


@dataclass(frozen=True)
class EmailContent:
    subject: str
    body: str
    html_body: str


def order_url(order: Order) -> str:
    """The order's private link: whoever holds it reads the order. Only in the e-mail's body."""
    return settings.SHOP_BASE_URL.rstrip("/") + order.get_absolute_url()


def lookup_url(order: Order) -> str:
    """ "Find my order" with the number filled in: the order page once the checkout e-mail is given.
    What a text carries: an SMS body alone does not open the order (tests/security/test_lookup_exposure.py)."""
    return settings.SHOP_BASE_URL.rstrip("/") + reverse("orders:lookup") + "?" + urlencode({"number": order.number})


def _email(template: str, subject: str, order: Order, lines=None, extra=None) -> EmailContent:
    context = (extra or {}) | {
        "order": order,
        "lines": order.lines.all() if lines is None else lines,
        "order_url": order_url(order),
        "lookup_url": lookup_url(order),
        "shop_name": settings.SHOP_NAME,
    }
    return EmailContent(
        subject=subject,
        body=render_to_string(f"orders/email/{template}.txt", context),
        html_body=render_to_string(f"orders/email/{template}.html", context),
    )


def confirmation_email(order: Order, lines=None) -> EmailContent:
    return _email("confirmation", f"Your order {order.number} is confirmed", order, lines)


def confirmation_sms(order: Order) -> str:
    return (
        f"{settings.SHOP_NAME}: thank you! Order {order.number} ({order.total} EUR) is confirmed. "
        f"Track it at {lookup_url(order)}"
    )


def key(order_id, notice: str, channel: str) -> str:
    """The business key of a message: one of each per order, e.g. order:<id>:confirmation:sms."""
    return f"order:{order_id}:{notice}:{channel}"


def email_notice(order: Order, notice: str, content: EmailContent) -> Notification:
    """An e-mail to the order's customer, under its business key (`notice`: confirmation, cancelled…)."""
    return Notification(
        idempotency_key=key(order.pk, notice, Notification.Channel.EMAIL),
        order=order,
        channel=Notification.Channel.EMAIL,
        recipient=order.email,
        subject=content.subject,
        body=content.body,
        html_body=content.html_body,
    )


def sms_notice(order: Order, notice: str, body: str) -> Notification:
    """A text to the order's customer, under its business key."""
    return Notification(
        idempotency_key=key(order.pk, notice, Notification.Channel.SMS),
        order=order,
        channel=Notification.Channel.SMS,
        recipient=order.phone,
        body=body,
    )


def confirmation(order: Order, lines=None) -> list[Notification]:
    """The confirmation e-mail and SMS, queued with the confirmation; the workflow's last two
    tasks send them."""
    return [
        email_notice(order, "confirmation", confirmation_email(order, lines)),
        sms_notice(order, "confirmation", confirmation_sms(order)),
    ]


def stopped(order: Order) -> Notification:
    """The e-mail telling the customer their order stopped before they paid: cancelled (declined
    card, left unpaid, cancelled by us) or failed (the payment could not be taken)."""
    if order.status == Order.Status.CANCELLED:
        return email_notice(order, "cancelled", _email("cancelled", f"Your order {order.number} was cancelled", order))
    return email_notice(order, "failed", _email("failed", f"A problem with your order {order.number}", order))


def cancellation(order: Order, channel: str) -> Notification:
    """The e-mail or text telling the customer the cancellation they (or staff) asked for is done:
    refunded if they were charged, the items released. Sent by the cancellation's chord."""
    refunded = order.payment.status == order.payment.Status.REFUNDED
    if channel == Notification.Channel.SMS:
        money = f"€{order.total} is refunded to your card" if refunded else "you have not been charged"
        body = f"{settings.SHOP_NAME}: order {order.number} is cancelled; {money}. Details: {lookup_url(order)}"
        return sms_notice(order, "cancelled", body)
    context = {"refunded": refunded}
    content = _email("cancellation", f"Your order {order.number} is cancelled", order, extra=context)
    return email_notice(order, "cancelled", content)
