"""Read models of an order, shared by the order page and the JSON API."""

from django.urls import reverse

from .models import Order


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
