"""Read models of an order, shared by the order page and the JSON API."""

from datetime import timedelta

from django.db.models import Max, Q, QuerySet
from django.db.models.functions import Coalesce, Greatest
from django.urls import reverse
from django.utils import timezone

from .models import Order


def stuck_orders(minutes: int) -> QuerySet[Order]:
    """Active orders whose workflow has not moved for `minutes`: nothing started or
    finished since, by any step (including orders whose workflow was never sent)."""
    cutoff = timezone.now() - timedelta(minutes=minutes)
    last_move = Greatest(
        Coalesce(Max("steps__finished_at"), "created_at"), Coalesce(Max("steps__started_at"), "created_at")
    )
    return (
        Order.objects.filter(status__in=Order.ACTIVE_STATUSES, created_at__lt=cutoff)
        .annotate(last_move=last_move)
        .filter(Q(last_move__lt=cutoff))
    )


def order_status(order: Order) -> dict:
    """The order's status, workflow steps and notifications, as the API returns them."""
    return {
        "id": str(order.pk),
        "number": order.number,
        "status": order.status,
        "total": str(order.total),
        "failure_reason": order.failure_reason,
        "created_at": order.created_at.isoformat(),
        "url": order.get_absolute_url(),
        "status_url": reverse("api:order_detail", args=[order.pk]),
        "steps": [
            {
                "name": step.name,
                "state": step.state,
                "task_id": step.task_id,
                "started_at": step.started_at.isoformat() if step.started_at else None,
                "finished_at": step.finished_at.isoformat() if step.finished_at else None,
                "attempts": step.attempts,
                "error": step.error,
            }
            for step in order.steps.all()
        ],
        "notifications": [
            {"channel": n.channel, "status": n.status, "to": n.recipient, "attempts": n.attempts}
            for n in order.notifications.order_by("created_at")
        ],
    }
