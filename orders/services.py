"""What each step of the order workflow does, and what staff and periodic jobs may do to an order.

Every change of an order's status goes through orders/lifecycle.py. Every step checks the
order's state before acting — nothing is shipped, counted or confirmed for an order that is not
paid — and guards its effect with a business key (the payment's idempotency key, a one-to-one
shipment, a timestamp set by a conditional UPDATE, a notification key), so a retried or
redelivered task never charges, ships, counts or sends twice. A step's success is recorded in
the transaction of its effect, and so is a chord step's report to the workflow's chord.

The payment is the commit point. Before it, an order that stops is cancelled (declined card,
unpaid, cancelled by staff) or failed (the charge failed for good), its stock released and its
customer told. After it, nothing fails the order: a step that fails for good puts it on hold for
staff, with its stock kept and the customer told nothing that a later confirmation would
contradict; messages follow only from the outcome.
"""

import logging
import secrets

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from notifications import services as notifications
from notifications.models import Notification
from notifications.tasks import deliver_message
from tasks_admin import history
from tasks_admin.backend import atomic_with_chord_report
from tasks_admin.sql import db_value

from . import lifecycle, messages, stock, workflow
from .errors import MessageCancelled, NoFailedStep, OrderActionRefused, StepNotAllowed
from .models import Order, OrderLine, Payment, Shipment, WorkflowStep
from .payments import PaymentDeclined, get_gateway

logger = logging.getLogger(__name__)

Status = Order.Status
State = WorkflowStep.State
ON_HOLD_REASON = "a problem on our side delays your order; our team is on it and will be in touch."

# Steps


def settle_step(order_id, step: str, state: str, *, error: str = "") -> bool:
    """Record a step's outcome; return whether the row changed. One that succeeded stays
    succeeded: a late duplicate of its task finding the order moved on does not undo it. A
    failure is recorded only on a step still to do: one the order stopped (not run, with the
    reason) stays so when the run staff terminated dies."""
    rows = WorkflowStep.objects.filter(order_id=order_id, name=step).exclude(state=State.SUCCESS)
    if state == State.FAILURE:
        rows = rows.filter(state=State.PENDING)
    return bool(rows.update(state=state, finished_at=timezone.now(), error=error, tallied=False))


def settled_clause(order_id, step: str, when: str = "") -> tuple[str, list]:
    """A step's success as a data-modifying WITH clause named `settled` (PostgreSQL), for the
    statement of the step's effect to record it in the same round trip; `when`: an SQL condition
    on that statement's other clauses (it also makes them run, and lock the order, first)."""
    table = WorkflowStep._meta.db_table
    sql = (
        f"settled AS (UPDATE {table} SET state = %s, finished_at = %s, error = '', tallied = false "
        f"WHERE order_id = %s AND name = %s AND state <> %s{f' AND {when}' if when else ''})"
    )
    now = db_value(WorkflowStep, "finished_at", timezone.now())
    return sql, [State.SUCCESS, now, db_value(WorkflowStep, "order", order_id), step, State.SUCCESS]


def _postgresql() -> bool:
    return connection.vendor == "postgresql"


def charge_payment(order_id: str) -> str:
    """Charge the card once; return the gateway's reference. A declined card cancels the order."""
    payment, moved = _payment_to_charge(order_id)
    if payment.status == Payment.Status.CAPTURED:
        return payment.gateway_reference
    if payment.status == Payment.Status.DECLINED:
        raise PaymentDeclined(payment.error)
    if not moved:
        raise _not_allowed(order_id, "not charging it")
    try:
        reference = get_gateway().charge(
            token=payment.card_token, amount=payment.amount, idempotency_key=payment.idempotency_key
        )
    except PaymentDeclined as exc:
        with transaction.atomic():
            Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.DECLINED, error=str(exc))
            _stop(
                order_id,
                lifecycle.DECLINE,
                reason="your payment was declined.",
                actor=f"workflow:{workflow.CHARGE}",
                failing=workflow.CHARGE,
            )
        raise
    captured = {"status": Payment.Status.CAPTURED, "gateway_reference": reference, "captured_at": timezone.now()}
    if _postgresql():  # the move to paid, the payment and the step in one statement
        moved, move_params = lifecycle.move_clause(order_id, lifecycle.CAPTURE)
        settled, params = settled_clause(order_id, workflow.CHARGE)
        columns = ", ".join(f"{name} = %s" for name in captured)
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH {moved}, {settled} UPDATE {Payment._meta.db_table} SET {columns} WHERE id = %s",
                [
                    *move_params,
                    *params,
                    *(db_value(Payment, name, value) for name, value in captured.items()),
                    payment.pk,
                ],
            )
        return reference
    with transaction.atomic():
        lifecycle.move(order_id, lifecycle.CAPTURE)
        Payment.objects.filter(pk=payment.pk).update(**captured)
        settle_step(order_id, workflow.CHARGE, State.SUCCESS)
    return reference


def _payment_to_charge(order_id) -> tuple[Payment, bool]:
    """The order's payment, and whether the order moved to processing (START_CHARGE: from then on
    the charge may be at the gateway, and the stale-order job leaves the order alone). A payment
    captured or declined already moves nothing. On PostgreSQL, the move reads the payment: one
    statement (tests/unit/test_steps.py::test_each_step_settles_itself_in_the_statement_of_its_effect)."""
    if not _postgresql():
        payment = Payment.objects.get(order_id=order_id)
        settled = payment.status in (Payment.Status.CAPTURED, Payment.Status.DECLINED)
        return payment, not settled and lifecycle.move(order_id, lifecycle.START_CHARGE)
    table = Payment._meta.db_table
    moved, params = lifecycle.move_clause(
        order_id,
        lifecycle.START_CHARGE,
        condition=f"id IN (SELECT order_id FROM {table} WHERE status NOT IN (%s, %s))",
        params=(Payment.Status.CAPTURED, Payment.Status.DECLINED),
    )
    rows = Payment.objects.raw(
        f"WITH {moved} SELECT *, EXISTS (SELECT 1 FROM moved) AS moved FROM {table} WHERE order_id = %s",
        [*params, db_value(Payment, "order", order_id)],
    )
    for payment in rows:
        return payment, payment.moved
    raise Payment.DoesNotExist(f"order {order_id} has no payment")


def create_shipment(order_id: str) -> str:
    """Hand the paid order to the warehouse: one Shipment per order, under a random reference
    that says nothing about the order (tests/security/test_message_security.py). Its report to
    the workflow's chord commits with it (see record_sales)."""
    with atomic_with_chord_report():
        if _postgresql() and (reference := _create_shipment_at_once(order_id)):
            return reference
        order = locked(order_id)
        reference = Shipment.objects.filter(order=order).values_list("reference", flat=True).first()
        if reference is None:
            if order.status != Status.PAID:
                raise _not_allowed(order, "not shipping it")
            reference = Shipment.objects.create(order=order, reference=new_shipment_reference()).reference
        settle_step(order_id, "create_shipment", State.SUCCESS)
    return reference


def _create_shipment_at_once(order_id) -> str | None:
    """The usual case in one statement: the paid order locked, its shipment created and the step
    settled; None when there is more to it (a shipment already, or an order not paid)."""
    order_table, shipment_table = Order._meta.db_table, Shipment._meta.db_table
    settled, settle_params = settled_clause(order_id, "create_shipment", when="EXISTS (SELECT 1 FROM created)")
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH paid AS (SELECT id FROM {order_table} WHERE id = %s AND status = %s FOR UPDATE), "
            f"created AS (INSERT INTO {shipment_table} (order_id, reference, status, created_at) "
            "SELECT id, %s, %s, %s FROM paid ON CONFLICT (order_id) DO NOTHING RETURNING reference), "
            f"{settled} SELECT reference FROM created",
            [
                db_value(Order, "id", order_id),
                Status.PAID,
                new_shipment_reference(),
                Shipment.Status.READY,
                db_value(Shipment, "created_at", timezone.now()),
                *settle_params,
            ],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def new_shipment_reference() -> str:
    return "SH-" + secrets.token_hex(6).upper()


def record_sales(order_id: str) -> bool:
    """Add the paid order's units to the products' sales statistics, once.

    Run by its task in the workflow's chord, its report to the chord is counted in this
    transaction too (tasks_admin/backend.py): the effect, the step's settlement and the report
    commit together, and the callback is sent once they have."""
    with atomic_with_chord_report():
        # On PostgreSQL the step is settled by the statement that counts them.
        settle = (
            settled_clause(order_id, "record_sales", when="EXISTS (SELECT 1 FROM claimed)") if _postgresql() else None
        )
        counted = stock.count_sales_once(order_id, timezone.now(), also=settle)
        if not counted and not Order.objects.filter(pk=order_id, sales_recorded_at__isnull=False).exists():
            raise _not_allowed(order_id, "not counting its sales")
        if not (counted and settle):
            settle_step(order_id, "record_sales", State.SUCCESS)
    return counted


def confirm_order(order_id: str) -> bool:
    """The chord's callback: the order is paid, shipped and counted, so it is confirmed, and its
    confirmation e-mail and SMS are queued for the workflow's last two tasks."""
    with transaction.atomic():
        confirmed = _confirmed(order_id)
        if confirmed is None:
            if Order.objects.filter(pk=order_id, status=Status.CONFIRMED).exists():
                return False  # confirmed by an earlier run of this task
            raise _not_allowed(order_id, "not confirming it")
        notifications.queue(messages.confirmation(*confirmed))
    return True


def _confirmed(order_id) -> tuple[Order, list[OrderLine]] | None:
    """The paid order moved to confirmed if it is shipped and counted, its step settled, with its
    lines; None if it did not move. On PostgreSQL one statement: the move returns the order and
    its lines, what its messages need (tests/unit/test_steps.py counts the statements)."""
    if not _postgresql():
        every_step_done = Q(Exists(Shipment.objects.filter(order=OuterRef("pk"))), sales_recorded_at__isnull=False)
        if not lifecycle.move(order_id, lifecycle.CONFIRM, condition=every_step_done):
            return None
        settle_step(order_id, workflow.CONFIRM, State.SUCCESS)
        order = Order.objects.get(pk=order_id)
        return order, list(order.lines.all())
    every_step_done = (
        f"sales_recorded_at IS NOT NULL AND EXISTS (SELECT 1 FROM {Shipment._meta.db_table} WHERE order_id = %s)"
    )
    moved, move_params = lifecycle.move_clause(
        order_id, lifecycle.CONFIRM, condition=every_step_done, params=(db_value(Shipment, "order", order_id),)
    )
    settled, params = settled_clause(order_id, workflow.CONFIRM, when="EXISTS (SELECT 1 FROM moved)")
    line_fields = [f.column for f in OrderLine._meta.concrete_fields]
    rows = list(
        Order.objects.raw(
            f"WITH {moved}, {settled} SELECT moved.*, {', '.join(f'line.{c} AS line_{c}' for c in line_fields)} "
            f"FROM moved LEFT JOIN {OrderLine._meta.db_table} line ON line.order_id = moved.id ORDER BY line.id",
            [*move_params, *params],
        )
    )
    if not rows:
        return None
    order = rows[0]
    lines = [
        OrderLine(**{c: getattr(row, f"line_{c}") for c in line_fields}) for row in rows if row.line_id is not None
    ]
    return order, lines


def send_confirmation(order_id: str, channel: str) -> int:
    """Send the confirmation e-mail or SMS queued when the order was confirmed, once; refused
    (MessageCancelled) if staff cancelled it."""
    notification = notifications.deliver(messages.key(order_id, "confirmation", channel))
    if notification.status == Notification.Status.CANCELLED:
        raise MessageCancelled(f"The {channel} confirmation of this order was cancelled by staff: not sending it.")
    return notification.pk


def stop_after_failure(order_id: str) -> str:
    """The workflow's error callback: a fulfilment step failed for good.

    Before the payment was taken the order fails (stock released, customer told); after it,
    the order is put on hold for staff. An order that already moved on (cancelled by a
    declined card, held or cancelled by staff) is left as it is. Returns the order's status;
    raises NoFailedStep when no step is recorded as failed.
    """
    with transaction.atomic():
        order = locked(order_id)
        if order.status not in Order.ACTIVE_STATUSES:
            return order.status
        failed = order.steps.filter(state=State.FAILURE).order_by("position").first()
        if failed is None:
            raise NoFailedStep(f"Order {order.number}: the error callback ran, but no step failed.")
        actor = f"workflow:{failed.name}"
        if order.status == Status.PAID:
            _hold(order, actor=actor, note=f"{failed.name} failed: {failed.error}")
        elif _charged_after_all(order):
            _hold(order, actor=actor, note="the charge went through, but its reply was lost")
        else:
            _stop(order, lifecycle.FAIL_PAYMENT, reason="we could not take the payment.", actor=actor)
        logger.warning("Order %s %s: %s failed: %s", order.number, order.status, failed.name, failed.error)
    return order.status


def _charged_after_all(order: Order) -> bool:
    """Whether a charge that failed for good went through at the gateway all the same (it took the
    money, then every reply was lost): then the order is paid, and is held for staff rather than
    failed with a customer told "not charged". Asked of the gateway by the charge's key."""
    payment = order.payment
    reference = get_gateway().find_charge(idempotency_key=payment.idempotency_key)
    if reference is None:
        return False
    Payment.objects.filter(pk=payment.pk).update(
        status=Payment.Status.CAPTURED, gateway_reference=reference, captured_at=timezone.now(), error=""
    )
    lifecycle.require(order, lifecycle.CAPTURE)
    settle_step(order.pk, workflow.CHARGE, State.SUCCESS)
    return True


# What staff and periodic jobs may do to an order


def cancel_order(order_id, *, reason: str, actor: str, user=None, condition=None) -> bool:
    """Cancel an order that is not paid (pending, or failed): stock released, the steps not run
    marked so, the customer told. Refused while the charge is at the gateway or once paid.
    With `condition`, an order that no longer meets it is left alone (False)."""
    with transaction.atomic():
        if _stop(order_id, lifecycle.CANCEL, reason=reason, actor=actor, user=user, condition=condition):
            return True
    if condition is None:
        raise lifecycle.refusal(order_id, lifecycle.CANCEL)
    return False


def hold_order(order_id, *, actor: str, user=None, note: str = "") -> None:
    """Put a paid order on hold (staff revoked or terminated one of its steps): nothing more runs
    until staff continue it. Its stock stays reserved and its payment taken."""
    with transaction.atomic():
        order = locked(order_id)
        if order.status != Status.PAID:
            raise lifecycle.refusal(order, lifecycle.HOLD)
        _hold(order, actor=actor, user=user, note=note)


def continue_order(order_id, *, actor: str, user=None, reason: str = "") -> list[str]:
    """Send the order's unfinished steps again, under new task ids; return the steps sent.

    A failed order takes its stock off sale again (refused if it is gone) and is charged again
    under the same idempotency key; an order on hold carries on from where it stopped; an
    active one (the recovery job) is sent on. Steps that succeeded are not run again.
    """
    with transaction.atomic():
        order = locked(order_id)
        if order.status == Status.FAILED:
            stock.reserve_again(order)
            lifecycle.require(order, lifecycle.RETRY_PAYMENT, actor=actor, user=user, note=reason, failure_reason="")
        elif order.status == Status.ON_HOLD:
            lifecycle.require(order, lifecycle.RESUME, actor=actor, user=user, note=reason, failure_reason="")
        elif order.status not in Order.ACTIVE_STATUSES:
            raise OrderActionRefused(f"Order {order.number} is {order.get_status_display()}: it cannot continue.")
        return workflow.send_rest(order, reason=f"continued by {actor}")


def reopen_confirmation(order_id, channel: str) -> Notification:
    """Let a confirmation message that was refused or cancelled be sent again, to the order's
    current address (staff may have corrected it). Only for a confirmed order."""
    order = Order.objects.get(pk=order_id)
    if order.status != Status.CONFIRMED:
        raise OrderActionRefused(f"Order {order.number} is {order.get_status_display()}: nothing to confirm.")
    recipient = order.email if channel == Notification.Channel.EMAIL else order.phone
    return notifications.reopen(messages.key(order.pk, "confirmation", channel), recipient=recipient)


def cancel_confirmation(order_id, channel: str, *, force: bool = False) -> bool:
    """Staff revoked a confirmation message: it is not to be sent (if it was not sent already).
    `force`: even while a worker is sending it (staff terminate that worker's task)."""
    return notifications.cancel(messages.key(order_id, "confirmation", channel), force=force)


# Shared by the above


def locked(order_id) -> Order:
    return Order.objects.select_for_update().get(pk=getattr(order_id, "pk", order_id))


def _not_allowed(order, doing: str) -> StepNotAllowed:
    if not isinstance(order, Order):
        order = Order.objects.only("number", "status").get(pk=order)
    return StepNotAllowed(f"Order {order.number} is {order.get_status_display()}: {doing}.")


def _stop(
    order,
    transition: lifecycle.Transition,
    *,
    reason: str,
    actor: str = "",
    user=None,
    failing: str = "",
    condition=None,
) -> bool:
    """Stop an order that was not paid: move it, release its stock, mark the steps that will not
    run now (all but `failing`, which records its own failure), tell the customer. Returns
    whether it moved (call inside a transaction)."""
    if not lifecycle.move(
        order, transition, actor=actor, user=user, note=reason, condition=condition, failure_reason=reason
    ):
        return False
    order = Order.objects.get(pk=getattr(order, "pk", order))
    stock.release(order)
    skip_unfinished(order, f"not run: order {order.get_status_display()}: {reason}", failing=failing)
    _tell(messages.stopped(order))
    return True


def _hold(order: Order, *, actor: str, user=None, note: str) -> None:
    lifecycle.require(order, lifecycle.HOLD, actor=actor, user=user, note=note, failure_reason=ON_HOLD_REASON)
    skip_unfinished(order, f"not run: order on hold ({note})")


def skip_unfinished(order: Order, why: str, failing: str = "") -> None:
    """The steps that will not run now, and their tasks that are waiting or queued, say so: nothing
    of the order looks queued that never will run (its recovery job and staff see the truth)."""
    order.steps.filter(state=State.PENDING).exclude(name=failing).update(
        state=State.SKIPPED, error=why, finished_at=timezone.now(), tallied=False
    )
    names = [workflow.task_name(step) for step in (*workflow.STEPS, *workflow.MESSAGES) if step != failing]
    history.skip(history.unstarted(order, names), why)


def _tell(notification: Notification) -> None:
    """Queue a message for the customer in this transaction; deliver it once it commits."""
    notifications.queue([notification])
    key = notification.idempotency_key
    transaction.on_commit(lambda: deliver_message.delay(key))
