"""The order workflow end to end: HTTP checkout → broker → `celery -A shop worker` → database."""

import pytest
from celery import states
from django.db import transaction
from django_celery_results.models import TaskResult

from orders import tasks
from orders.checkout import Customer, place_order
from orders.models import DemoGatewayCharge, Order, Payment, Shipment
from shop.models import Product
from tasks_admin.models import TaskRecord
from tests.factories import DECLINED_CARD, GOOD_CARD, make_product, order_payload
from tests.fakes.sms_gateway import Reply
from tests.support import WORKFLOW_STEPS, WORKFLOW_TASKS, mailbox, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def place(client, payload) -> Order:
    response = client.post("/api/orders/", payload, content_type="application/json")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == Order.Status.PENDING  # the worker may have started it since
    return Order.objects.get(pk=response.json()["id"])


def finished(order: Order, *, notifications: int) -> Order | None:
    """The order once it reached a final status (or on hold) and `notifications` messages were
    attempted (not counting those cancelled unsent)."""
    order.refresh_from_db()
    final = order.is_finished or order.status == Order.Status.ON_HOLD
    attempted = order.notifications.exclude(status__in=("pending", "cancelled"))
    return order if final and attempted.count() >= notifications else None


def test_checkout_to_confirmed_sends_one_email_one_sms_and_records_sales(worker, client, sms_gateway, mail_dir):
    product = make_product(stock=5, price="10.00")
    payload = order_payload((product, 2))
    order = place(client, payload)

    wait_for(lambda: finished(order, notifications=2), message="order confirmed")

    assert order.status == Order.Status.CONFIRMED
    product.refresh_from_db()
    assert (product.stock, product.units_sold) == (3, 2)
    assert order.payment.status == Payment.Status.CAPTURED
    assert DemoGatewayCharge.objects.get(idempotency_key=order.payment.idempotency_key).requests == 1
    assert Shipment.objects.filter(order=order, status=Shipment.Status.READY).count() == 1
    emails = mailbox(mail_dir, to=payload["customer"]["email"])
    assert len(emails) == 1 and order.number in emails[0]["Subject"]
    assert len(emails[0].get_payload()) == 2  # text and HTML parts
    sms = sms_gateway.accepted(to=payload["customer"]["phone"])
    assert len(sms) == 1 and order.number in sms[0].body
    assert sms[0].authorization == "Bearer test-key"

    steps = list(order.steps.all())
    assert [s.name for s in steps] == WORKFLOW_STEPS
    assert all(s.state == states.SUCCESS and s.finished_at for s in steps)
    # No task of the workflow writes a result nothing reads (ignore_result): the steps' outcome is
    # the WorkflowStep's, the messages' their Notification's, every run's the task history's
    # (docs/architecture.md, "One writer per fact"). Only errors are stored.
    runs = TaskRecord.objects.about(order).filter(task_name__in=[f"orders.tasks.{name}" for name in WORKFLOW_TASKS])
    assert runs.count() == len(WORKFLOW_TASKS)
    assert not TaskResult.objects.filter(task_id__in=runs.values("task_id")).exists()


def test_declined_card_cancels_the_order_releases_stock_and_tells_the_customer(worker, client, sms_gateway, mail_dir):
    product = make_product(stock=4)
    payload = order_payload((product, 3), card_number=DECLINED_CARD)
    order = place(client, payload)
    product.refresh_from_db()
    assert product.stock == 1  # reserved at checkout

    wait_for(lambda: finished(order, notifications=1), message="order cancelled")

    assert order.status == Order.Status.CANCELLED
    assert "declined" in order.failure_reason
    product.refresh_from_db()
    assert (product.stock, product.units_sold) == (4, 0)
    assert not DemoGatewayCharge.objects.exists()
    assert order.steps.get(name="charge_payment").state == states.FAILURE
    assert order.steps.get(name="create_shipment").state == "SKIPPED"
    emails = mailbox(mail_dir, to=payload["customer"]["email"])
    assert [m["Subject"] for m in emails] == [f"Your order {order.number} was cancelled"]
    assert sms_gateway.received(to=payload["customer"]["phone"]) == []


def test_sms_gateway_failing_twice_then_succeeding_sends_exactly_one_sms(worker, client, sms_gateway):
    sms_gateway.script(503, Reply(status=429, headers={"Retry-After": "0"}))
    product = make_product()
    payload = order_payload((product, 1))
    order = place(client, payload)

    wait_for(lambda: finished(order, notifications=2), message="order confirmed")

    assert order.status == Order.Status.CONFIRMED
    phone = payload["customer"]["phone"]
    assert [r.status for r in sms_gateway.received(to=phone)] == [503, 429, 200]
    assert len(sms_gateway.accepted(to=phone)) == 1
    notification = order.notifications.get(channel="sms")
    assert (notification.status, notification.attempts) == ("sent", 3)


def test_a_refused_sms_is_not_retried_and_does_not_stop_the_paid_order(worker, client, sms_gateway, mail_dir):
    sms_gateway.script(400)
    product = make_product(stock=2)
    payload = order_payload((product, 2))
    order = place(client, payload)

    wait_for(lambda: finished(order, notifications=2), message="order confirmed, its messages attempted")

    assert order.status == Order.Status.CONFIRMED  # paid and shipped: a refused SMS stops nothing
    assert len(sms_gateway.received(to=payload["customer"]["phone"])) == 1  # a 4xx is not retried
    assert order.notifications.get(channel="sms").status == "failed"
    product.refresh_from_db()
    assert (product.stock, product.units_sold) == (0, 2)  # sold, not released
    subjects = [m["Subject"] for m in mailbox(mail_dir, to=payload["customer"]["email"])]
    assert subjects == [f"Your order {order.number} is confirmed"]  # and nothing contradicting it


def test_redelivered_steps_charge_and_send_nothing_twice(worker, client, sms_gateway, mail_dir):
    product = make_product(stock=3)
    payload = order_payload((product, 1))
    order = place(client, payload)
    wait_for(lambda: finished(order, notifications=2), message="order confirmed")

    # The same messages again, as a broker redelivers them: same task ids, same arguments.
    for name in ("charge_payment", "create_shipment", "record_sales", "confirm_order"):
        step = order.steps.get(name=name)
        getattr(tasks, name).apply_async((str(order.pk),), task_id=step.task_id).get(timeout=30)
    for name in ("send_confirmation_email", "send_confirmation_sms"):
        getattr(tasks, name).delay(str(order.pk)).get(timeout=30)

    assert DemoGatewayCharge.objects.get().requests == 1
    assert len(sms_gateway.accepted(to=payload["customer"]["phone"])) == 1
    assert len(mailbox(mail_dir, to=payload["customer"]["email"])) == 1
    product.refresh_from_db()
    assert (product.stock, product.units_sold) == (2, 1)


def test_a_rolled_back_checkout_sends_no_workflow(worker):
    product = make_product(stock=3)
    with pytest.raises(RuntimeError), transaction.atomic():
        order = place_order(
            customer=Customer(name="Rollback", email="rb@example.com", phone="+442079460000"),
            shipping_address="Nowhere",
            items=[(product.sku, 1)],
            card_number=GOOD_CARD,
        )
        task_ids = list(order.steps.values_list("task_id", flat=True))
        raise RuntimeError("the request failed after placing the order")

    # A later order's workflow runs to the end; the rolled-back one never ran at all.
    later = place_order(
        customer=Customer(name="Later", email="later@example.com", phone="+442079460001"),
        shipping_address="Somewhere",
        items=[(product.sku, 1)],
        card_number=GOOD_CARD,
    )
    wait_for(lambda: finished(later, notifications=2), message="later order confirmed")
    assert not TaskResult.objects.filter(task_id__in=task_ids).exists()
    assert Product.objects.get(pk=product.pk).stock == 2
