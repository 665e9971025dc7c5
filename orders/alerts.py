"""The orders' alert rules (registered in orders/console.py): an order paid and not confirmed
within N minutes, an order stuck in a state that is not final
(tests/unit/test_alerts.py, tests/integration/test_business_alerts.py)."""

from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.urls import reverse

from tasks_admin.alerts import Finding
from tasks_admin.models import AlertRule

from .models import Order

SHOWN = 5  # order numbers named in a summary


def _orders(late: QuerySet[Order], what: str, link: str) -> Iterator[Finding]:
    """One finding for all the `late` orders (none if there are none), naming the first SHOWN."""
    count = late.count()
    if count:
        orders = list(late[:20])
        named = ", ".join(order.number for order in orders[:SHOWN])
        more = f" and {count - SHOWN} more" if count > SHOWN else ""
        yield Finding(
            f"{count} order{'s' if count > 1 else ''} {what}: {named}{more}.", count, subjects=orders, link=link
        )


def paid_not_confirmed(row: AlertRule, now: datetime) -> Iterator[Finding]:
    """Orders whose payment was captured over `threshold` minutes ago and that are still paid,
    not confirmed: their fulfilment is not running (a worker down, a step stuck)."""
    late = Order.objects.filter(
        status=Order.Status.PAID, payment__captured_at__lt=now - timedelta(minutes=row.threshold)
    ).order_by("payment__captured_at")
    yield from _orders(
        late,
        f"paid more than {row.threshold:g} min ago, not confirmed",
        reverse("admin:orders_order_changelist") + f"?status__exact={Order.Status.PAID}",
    )


def stuck(row: AlertRule, now: datetime) -> Iterator[Finding]:
    """Orders in a state that is not final (pending, processing, paid, on hold) whose status has
    not changed for `threshold` minutes."""
    late = (
        Order.objects.exclude(status__in=Order.FINAL_STATUSES)
        .filter(updated_at__lt=now - timedelta(minutes=row.threshold))
        .order_by("updated_at")
    )
    yield from _orders(
        late,
        f"not final and unchanged for more than {row.threshold:g} min",
        reverse("admin:orders_order_changelist") + "?workflow=stuck",
    )
