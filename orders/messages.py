"""What the shop tells a customer about an order, by e-mail and SMS."""

from dataclasses import dataclass

from django.conf import settings
from django.template.loader import render_to_string

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


def failure_email(order: Order) -> EmailContent:
    if order.status == Order.Status.CANCELLED:
        return _email("cancelled", f"Your order {order.number} was cancelled", order)
    return _email("failed", f"A problem with your order {order.number}", order)


def stale_cancellation_email(order: Order) -> EmailContent:
    return _email("stale_cancelled", f"Your order {order.number} was cancelled", order)


def confirmation_sms(order: Order) -> str:
    return (
        f"{settings.SHOP_NAME}: thank you! Order {order.number} ({order.total} EUR) is confirmed. "
        f"Track it at {order_url(order)}"
    )
