"""What the orders app contributes to the task console, through its extension points: what
console actions mean for an order's workflow tasks (the README's table), the order's workflow
graph, a dashboard tile of stuck orders, its alert rules (orders/alerts.py), and finding an order's tasks by its number.

The console offers retry, revoke and terminate on any task; for an order's steps the order
decides (tasks_admin/console.py): revoking its queued charge cancels the order, revoking or
terminating a later step puts the paid order on hold, retrying a failed step continues the
order, and revoking or retrying a confirmation message cancels or re-sends that message.
What would break the order's rules is not offered, and refused if forged
(tests/integration/test_order_safety.py, tests/unit/test_order_console.py).
"""

from celery import states
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.urls import reverse

from notifications.models import Notification
from tasks_admin import alerts as task_alerts
from tasks_admin import console, dashboard, subjects
from tasks_admin import services as task_console
from tasks_admin.console import Action, Offer, Outcome
from tasks_admin.models import PLANNED, TaskAction, TaskRecord

from . import alerts, lifecycle, services, workflow
from .errors import CheckoutError, OrderActionRefused
from .graph import order_graph
from .models import Order
from .selectors import stuck_orders

Status = Order.Status
QUEUED = (PLANNED, states.PENDING, states.RETRY)
CHANNELS = {
    workflow.task_name("send_confirmation_email"): Notification.Channel.EMAIL,
    workflow.task_name("send_confirmation_sms"): Notification.Channel.SMS,
}


def order_of(record: TaskRecord) -> Order | None:
    """The order a task of its workflow is about (the task history's generic subject)."""
    subject = record.subject
    return subject if isinstance(subject, Order) else None


class OrderTasks(console.TaskOwner):
    def offers(self, record: TaskRecord) -> list[Offer]:
        order = order_of(record)
        if record.task_name == workflow.task_name(workflow.ON_ERROR) or order is None:
            return super().offers(record)  # the error callback is idempotent: Celery's meaning
        if record.task_name in CHANNELS:
            return _message_offers(record, order)
        if record.task_name == workflow.task_name(workflow.CHARGE):
            return _charge_offers(record, order)
        return _fulfilment_offers(record, order)

    def graph(self, record: TaskRecord):
        order = order_of(record)
        return order_graph(order) if order is not None else super().graph(record)

    def perform(self, action: Action, record: TaskRecord, *, user: AbstractBaseUser, reason: str) -> Outcome:
        if record.task_name == workflow.task_name(workflow.ON_ERROR) or order_of(record) is None:
            return super().perform(action, record, user=user, reason=reason)
        try:
            return self._perform(action, record, user=user, reason=reason)
        except (OrderActionRefused, CheckoutError) as exc:  # e.g. the stock is gone: said to staff as is
            raise task_console.ActionRefused(str(exc)) from exc

    def _perform(self, action: Action, record: TaskRecord, *, user: AbstractBaseUser, reason: str) -> Outcome:
        chosen = console.offer(self, record, action)  # refused unless offered in the order's state now
        order = order_of(record)
        if record.task_name in CHANNELS:
            return _act_on_message(action, record, order, user=user, reason=reason)
        if action == Action.RETRY:
            steps = continue_order(order, user=user, reason=reason)
            return Outcome(f"Continued order {order.number}: sent {', '.join(steps) or 'nothing'} again.")
        actor, note = lifecycle.staff(user), reason or f"{chosen.label.lower()} from the task console"
        if record.task_name == workflow.task_name(workflow.CHARGE):
            services.cancel_order(order.pk, reason="it was cancelled by our staff.", actor=actor, user=user)
            done = f"Cancelled order {order.number}: its stock is released and the customer told; it is not charged."
        else:
            services.hold_order(order.pk, actor=actor, user=user, note=note)
            done = f"Put order {order.number} on hold: continue it from its page when ready."
        task_console.revoke(record, user=user, reason=reason, terminate=action == Action.TERMINATE, message=done)
        return Outcome(done)


def continue_order(order: Order, *, user: AbstractBaseUser, reason: str = "") -> list[str]:
    """Staff continue an order (its admin page, or a retry of one of its steps): the failed runs
    it replaces count as dealt with, and the action is audited on the order."""
    steps = services.continue_order(order.pk, actor=lifecycle.staff(user), user=user, reason=reason)
    task_console.resolve_failures(TaskRecord.objects.about(order), user=user, note="Order continued.")
    task_console.audit(
        TaskAction.Kind.CONTINUE_WORKFLOW,
        user,
        reason,
        subject=order,
        target=order,
        message=f"Continued the workflow: {', '.join(steps) or 'nothing left to run'}",
    )
    return steps


def _charge_offers(record: TaskRecord, order: Order) -> list[Offer]:
    if record.state in QUEUED and order.status == Status.PENDING:
        return [
            Offer(Action.REVOKE, "Cancel order", f"Cancel {order.number}: not charged, stock released, customer told")
        ]
    if record.state == states.FAILURE and order.status == Status.FAILED and not record.resolved_at:
        return [Offer(Action.RETRY, "Charge again", f"Continue {order.number}: stock reserved again, charged once")]
    return []  # running: the charge is at the gateway; declined or cancelled: nothing to do


def _fulfilment_offers(record: TaskRecord, order: Order) -> list[Offer]:
    if order.status == Status.PAID and record.state in QUEUED:
        return [Offer(Action.REVOKE, "Hold order", f"Put {order.number} on hold: nothing more runs until continued")]
    if order.status == Status.PAID and record.state == states.STARTED:
        return [Offer(Action.TERMINATE, "Hold order", f"Stop this step and put {order.number} on hold")]
    if order.status == Status.ON_HOLD and record.state in console.RETRYABLE_STATES and not record.resolved_at:
        return [Offer(Action.RETRY, "Continue order", f"Send {order.number}'s unfinished steps again")]
    return []


def _message_offers(record: TaskRecord, order: Order) -> list[Offer]:
    if order.status != Status.CONFIRMED:
        return []  # sent only once the order is confirmed
    if record.state in QUEUED:
        return [Offer(Action.REVOKE, "Don't send", "Cancel this message: the customer will not get it")]
    if record.state == states.STARTED:
        return [Offer(Action.TERMINATE, "Stop sending", "Cancel this message; the provider may have it already")]
    if record.state in console.RETRYABLE_STATES and not record.resolved_at:
        return [Offer(Action.RETRY, "Send again", "Send it again, to the order's current address")]
    return []


def _act_on_message(action: Action, record: TaskRecord, order: Order, *, user, reason: str) -> Outcome:
    channel = CHANNELS[record.task_name]
    if action == Action.RETRY:
        notification = services.reopen_confirmation(order.pk, channel)
        task_id = task_console.send_again(record, user=user, reason=reason)
        return Outcome(f"Sending the {channel} to {notification.recipient} again (task {task_id}).", task_id)
    if not services.cancel_confirmation(order.pk, channel, force=action == Action.TERMINATE):
        status = order.notifications.get(channel=channel).get_status_display()
        raise task_console.ActionRefused(
            f"The {channel} for order {order.number} is {status} already: nothing to stop."
        )
    done = f"The {channel} for order {order.number} will not be sent."
    task_console.revoke(record, user=user, reason=reason, terminate=action == Action.TERMINATE, message=done)
    return Outcome(done)


console.register(OrderTasks(), workflow.TASK_NAMES)
dashboard.register_tile(
    dashboard.Tile(
        key="stuck-orders",
        label=lambda: f"Stuck orders (no progress for {settings.STUCK_WORKFLOW_MINUTES:g} min)",
        count=lambda: stuck_orders(settings.STUCK_WORKFLOW_MINUTES).count(),
        url=lambda: reverse("admin:orders_order_changelist") + "?workflow=stuck",
    )
)
task_alerts.register_rule(
    task_alerts.Rule(
        "order-paid-not-confirmed",
        "Order paid, not confirmed",
        "minutes",
        10,
        alerts.paid_not_confirmed,
        help="An order whose payment was captured this long ago and that is not confirmed.",
    )
)
task_alerts.register_rule(
    task_alerts.Rule(
        "order-stuck",
        "Order stuck",
        "minutes",
        60,
        alerts.stuck,
        help="An order in a state that is not final (on hold included) whose status has not changed for this long.",
    )
)
subjects.register_search(
    lambda term: Order.objects.filter(number=term.upper()) if term.upper().startswith("SO-") else (),
    hint="an order number (SO-…)",
)
