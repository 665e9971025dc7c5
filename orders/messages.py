"""What the shop tells a customer about an order, by e-mail and SMS, and under which business key.

Each message follows from a transition of the order (orders/services.py): it is queued as a
Notification in the transaction that makes the transition, so a customer hears of an outcome
only once it is committed, and at most once per key.
"""

from dataclasses import dataclass

from django.conf import settings
from django.template.loader import render_to_string

from notifications.models import Notification

from .models import Order


@dataclass(frozen=True)
class EmailContent:
    subject: str
    body: str
    html_body: str


def order_url(order: Order) -> str:
    return settings.SHOP_BASE_URL.rstrip("/") + order.get_absolute_url()


def _email(template: str, subject: str, order: Order, lines=None) -> EmailContent:
    context = {
        "order": order,
        "lines": order.lines.all() if lines is None else lines,
        "order_url": order_url(order),
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
        f"Track it at {order_url(order)}"
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
