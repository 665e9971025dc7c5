"""Read models of an order, shared by the order page, the JSON API, the admin and the jobs."""

from datetime import timedelta

from celery import states
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from tasks_admin.models import TaskRecord

from .models import Order, Payment, WorkflowStep

# What a step still to do shows, from its current run in the task history.
_RUNNING = {states.STARTED: states.STARTED, states.RETRY: states.RETRY}
# The payment's status as its customer reads it on the order page (live: orders/static/orders/order_live.js).
PAYMENT_LABELS = {
    Payment.Status.PENDING: "not taken yet",
    Payment.Status.CAPTURED: "taken",
    Payment.Status.DECLINED: "declined",
    Payment.Status.REFUNDED: "refunded",
    Payment.Status.VOIDED: "not taken",
}


def stuck_orders(minutes: int, statuses=Order.ACTIVE_STATUSES) -> QuerySet[Order]:
    """Active orders (or orders in `statuses`) whose workflow has not moved for `minutes`: no
    status change, no step settled, no task of theirs sent or started since (including orders
    whose workflow was never sent)."""
    cutoff = timezone.now() - timedelta(minutes=minutes)
    step_moved = WorkflowStep.objects.filter(order=OuterRef("pk"), finished_at__gte=cutoff)
    task_moved = TaskRecord.objects.about_outer(Order).filter(Q(sent_at__gte=cutoff) | Q(started_at__gte=cutoff))
    return (
        Order.objects.filter(status__in=statuses, created_at__lt=cutoff, updated_at__lt=cutoff)
        .exclude(Exists(step_moved))
        .exclude(Exists(task_moved))
    )


def order_status(order: Order) -> dict:
    """The order's status, fulfilment steps and messages, as the API returns them.

    A step's state is its recorded outcome (SUCCESS, FAILURE, SKIPPED) once it has one, written
    with its effect: a confirmed order never shows an unfinished step. Until then it is its
    current run's, from the task history: PENDING (waiting or queued), STARTED or RETRY.
    """
    steps = list(order.steps.all())
    runs = {
        run.task_id: run
        for run in TaskRecord.objects.filter(task_id__in=[step.task_id for step in steps]).only(
            "task_id", "state", "attempts", "started_at"
        )
    }

    def step_status(step: WorkflowStep) -> dict:
        run = runs.get(step.task_id)
        state = step.state
        if state == WorkflowStep.State.PENDING and run is not None:
            state = _RUNNING.get(run.state, state)
        return {
            "name": step.name,
            "state": state,
            "task_id": step.task_id,
            "started_at": run.started_at.isoformat() if run and run.started_at else None,
            "finished_at": step.finished_at.isoformat() if step.finished_at else None,
            "attempts": run.attempts if run else 0,
            "error": step.error,
        }

    return {
        "id": str(order.pk),
        "number": order.number,
        "status": order.status,
        "status_label": order.get_status_display(),
        "final": order.is_finished,  # nothing more happens unless staff act
        # the order's workflow, or its cancellation's, moves it on by itself
        "moving": order.status in (*Order.ACTIVE_STATUSES, Order.Status.CANCELLING),
        "total": str(order.total),
        "failure_reason": order.failure_reason,
        "created_at": order.created_at.isoformat(),
        "url": order.get_absolute_url(),
        "status_url": reverse("api:order_detail", args=[order.pk]),
        "payment": payment_status(order),
        "steps": [step_status(step) for step in steps],
        "notifications": [
            {"channel": n.channel, "status": n.status, "to": n.recipient, "attempts": n.attempts}
            for n in order.notifications.order_by("created_at")
        ],
    }


def payment_status(order: Order) -> dict:
    """The order's payment as its page and the API show it: refunded once the cancellation's
    refund is done (orders/cancellation.py: refund_payment), before the order is cancelled."""
    payment = Payment.objects.only("status", "refunded_at").get(order=order)
    label = PAYMENT_LABELS.get(payment.status, payment.status)
    if payment.status == Payment.Status.PENDING and order.status not in Order.ACTIVE_STATUSES:
        label = PAYMENT_LABELS[Payment.Status.VOIDED]  # failed, or stopped: not "yet"
    return {
        "status": payment.status,
        "label": label,
        "refunded_at": payment.refunded_at.isoformat() if payment.refunded_at else None,
    }
