"""Cancelling an order — by its customer or by staff — runs the cancellation workflow
(orders/cancellation_workflow.py) on a real worker: refunded at most once at the gateway, stock
released once, the customer told once by e-mail and by text, the sales figures put right, and
never anything shipped for a cancelled order, whatever the order's own workflow is doing."""

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from celery import states
from django.contrib.auth.models import Permission, User
from django.db import close_old_connections, connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from notifications.models import Notification
from orders import cancellation, maintenance, services, workflow
from orders.checkout import Customer, place_order
from orders.errors import StepNotAllowed
from orders.models import DemoGatewayCharge, Order, OrderEvent, Payment, Shipment, WorkflowStep
from orders.payments import DemoGateway
from shop.models import Product
from tasks_admin.models import DeadLetter, TaskRecord
from tests.factories import GOOD_CARD, make_product, order_payload
from tests.fakes import switches
from tests.support import mailbox, wait_for

from .test_order_safety import consuming_paused, place, status

pytestmark = pytest.mark.django_db(transaction=True)

CANCELLATION_TASKS = {
    "refund_payment",
    "release_stock",
    "send_cancellation_email",
    "send_cancellation_sms",
    "record_cancellation_sales",
    "finish_cancellation",
}


@pytest.fixture
def fault_dir(fake_tasks_dir: Path) -> Path:
    return fake_tasks_dir


def cancel(client: Client, order: Order, **extra):
    return client.post(
        f"/api/orders/{order.pk}/cancel/", {"reason": "changed my mind"}, content_type="application/json", **extra
    )


def cancelled(order: Order) -> bool:
    """Cancelled, and every task of its cancellation recorded as finished."""
    records = TaskRecord.objects.about(order).filter(task_name__in=[f"orders.tasks.{t}" for t in CANCELLATION_TASKS])
    return status(order) == Order.Status.CANCELLED and records.filter(state=states.SUCCESS).count() == len(
        CANCELLATION_TASKS
    )


def assert_cancelled_once(
    order: Order, product: Product, stock: int, mail_dir: Path, sms_gateway, *, charged: bool, told_before=()
):
    """Refunded at most once (or never charged), stock back, units not counted, nothing shipped,
    the customer told once on each channel and never confirmed (`told_before`: the e-mails, by
    kind, the order's workflow sent before it was cancelled, e.g. "failed")."""
    order.refresh_from_db()
    charges = DemoGatewayCharge.objects.filter(idempotency_key=order.payment.idempotency_key)
    if charged:
        [charge] = charges
        assert charge.refunded_at is not None and charge.refund_requests == 1
        assert order.payment.status == Payment.Status.REFUNDED
    else:
        assert not charges.exists() and order.payment.status == Payment.Status.VOIDED
    product.refresh_from_db()
    assert (product.stock, product.units_sold) == (stock, 0)
    assert order.stock_released_at is not None and order.sales_recorded_at is None
    assert not Shipment.objects.filter(order=order).exists()
    subjects = [m["Subject"] for m in mailbox(mail_dir, to=order.email)]
    earlier = {"failed": f"A problem with your order {order.number}"}
    # In any order: the file backend names a file by the second it was written, then at random.
    assert sorted(subjects) == sorted(
        [*(earlier[kind] for kind in told_before), f"Your order {order.number} is cancelled"]
    )
    texts = sms_gateway.accepted(to=order.phone)
    assert len(texts) == 1 and "cancelled" in texts[0].body and str(order.pk) not in texts[0].body
    assert set(order.notifications.values_list("idempotency_key", "status")) == {
        (f"order:{order.pk}:cancelled:email", Notification.Status.SENT),
        (f"order:{order.pk}:cancelled:sms", Notification.Status.SENT),
        *((f"order:{order.pk}:{kind}:email", Notification.Status.SENT) for kind in told_before),
    }
    for task in CANCELLATION_TASKS:  # one run each: one workflow
        assert TaskRecord.objects.about(order).filter(task_name=f"orders.tasks.{task}").count() == 1, task


def test_cancel_before_payment_voids_it_and_the_charge_never_runs(worker, client, sms_gateway, mail_dir):
    product = make_product(stock=5)
    with consuming_paused("orders"):
        order = place(client, order_payload((product, 2)))
        response = cancel(client, order)
        assert response.status_code == 202 and response.json()["status"] == Order.Status.CANCELLING

    wait_for(lambda: cancelled(order), message="the order cancelled")
    assert_cancelled_once(order, product, 5, mail_dir, sms_gateway, charged=False)
    assert order.steps.get(name="charge_payment").state == WorkflowStep.State.SKIPPED
    event = OrderEvent.objects.get(order=order, kind="request_cancel")
    assert (event.actor, event.note, event.from_status) == ("customer", "changed my mind", "pending")


def test_cancel_after_payment_during_the_chord_refunds_once_and_ships_nothing(
    worker, client, sms_gateway, mail_dir, fault_dir
):
    """Cancelled while the order's chord runs: its sales counted, its shipment in progress."""
    product = make_product(stock=5)
    with switches.slow(fault_dir, switches.SHIPMENT, 3) as shipping:
        order = place(client, order_payload((product, 2)))
        wait_for(shipping.exists, message="create_shipment running")
        wait_for(lambda: Order.objects.filter(pk=order.pk, sales_recorded_at__isnull=False).exists(), message="sales")
        assert Product.objects.get(pk=product.pk).units_sold == 2

        page = client.post(f"/orders/{order.pk}/cancel/", {"reason": ""})
        assert page.status_code == 302

    wait_for(lambda: cancelled(order), message="the order cancelled")
    assert_cancelled_once(order, product, 5, mail_dir, sms_gateway, charged=True)
    steps = dict(order.steps.values_list("name", "state"))
    assert steps["create_shipment"] == WorkflowStep.State.SKIPPED and steps["confirm_order"] == "SKIPPED"
    assert not order.notifications.filter(idempotency_key__contains="confirmation").exists()


def test_two_cancels_in_parallel_start_one_workflow(worker, client, sms_gateway, mail_dir):
    product = make_product(stock=5)
    with consuming_paused("orders"):
        order = place(client, order_payload((product, 1)))
        answers, barrier = [], threading.Barrier(2)

        def ask():
            barrier.wait()
            answers.append(cancel(Client(), order))
            close_old_connections()

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert sorted(a.status_code for a in answers) == [202, 202]
    assert sorted(a.json()["started"] for a in answers) == [False, True]
    wait_for(lambda: cancelled(order), message="the order cancelled")
    assert_cancelled_once(order, product, 5, mail_dir, sms_gateway, charged=False)


def test_cancel_after_shipment_is_refused_clearly(worker, client, sms_gateway):
    product = make_product(stock=5)
    order = place(client, order_payload((product, 1)))
    wait_for(lambda: status(order) == Order.Status.CONFIRMED, message="confirmed")
    wait_for(lambda: order.notifications.filter(status=Notification.Status.SENT).count() == 2, message="told")

    response = cancel(client, order)
    page = client.post(f"/orders/{order.pk}/cancel/", {})

    assert response.status_code == 409 and "already shipped" in response.json()["message"]
    assert page.status_code == 409 and "already shipped" in page.content.decode()
    assert "Cancel this order" not in client.get(order.get_absolute_url()).content.decode()
    assert status(order) == Order.Status.CONFIRMED
    assert DemoGatewayCharge.objects.get().refunded_at is None


def failed_order(client: Client, product: Product, fault_dir: Path) -> Order:
    """An order whose charge failed for good (the gateway raising, no charge made): failed, its
    stock released and its customer told "a problem with your order"."""
    with switches.failing(fault_dir, switches.CHARGE):
        order = place(client, order_payload((product, 2)))
        wait_for(lambda: status(order) == Order.Status.FAILED, message="the order failed")
    wait_for(lambda: order.notifications.filter(status=Notification.Status.SENT).count() == 1, message="told")
    order.refresh_from_db()
    assert order.stock_released_at is not None and order.payment.status == Payment.Status.PENDING
    assert not DemoGatewayCharge.objects.exists()
    return order


def test_a_failed_order_charged_after_all_is_cancelled_by_its_customer_and_refunded_once(
    worker, client, sms_gateway, mail_dir, fault_dir
):
    """The charge failed for good, the order failed and its stock was released; then the charge
    turns up at the gateway (its reply lost, after the workflow asked). The customer cancels from
    the order page: refunded once, the stock not released a second time, told once, cancelled —
    and the page's live part shows it refunded."""
    product = make_product(stock=5)
    order = failed_order(client, product, fault_dir)
    released_at = order.stock_released_at
    assert Product.objects.get(pk=product.pk).stock == 5
    payment = order.payment
    DemoGateway().charge(token=payment.card_token, amount=payment.amount, idempotency_key=payment.idempotency_key)

    assert "Cancel this order" in client.get(order.get_absolute_url()).content.decode()
    assert client.get(f"/orders/{order.pk}/cancel/").status_code == 200
    assert client.post(f"/orders/{order.pk}/cancel/", {"reason": "I was charged"}).status_code == 302

    wait_for(lambda: cancelled(order), message="the order cancelled")
    assert_cancelled_once(order, product, 5, mail_dir, sms_gateway, charged=True, told_before=("failed",))
    assert order.stock_released_at == released_at  # released once, when it failed
    assert "refunded to your card" in sms_gateway.accepted(to=order.phone)[0].body
    event = OrderEvent.objects.get(order=order, kind="request_cancel")
    assert (event.actor, event.from_status, event.note) == ("customer", "failed", "I was charged")
    live = client.get(f"/api/orders/{order.pk}/").json()
    assert live["status"] == "cancelled" and live["cancellable"] is False
    assert (live["payment"]["status"], live["payment"]["label"]) == ("refunded", "refunded")
    assert live["payment"]["refunded_at"]


def test_the_stale_order_job_refunds_a_failed_order_charged_after_all_instead_of_keeping_the_money(
    worker, client, sms_gateway, mail_dir, fault_dir
):
    """Left alone, a failed order is cancelled by the stale-order job: through the cancellation
    workflow, whose refund step asks the gateway by the charge's key — a charge that turned up
    after the order failed is refunded once, not kept by an order marked cancelled."""
    product = make_product(stock=5)
    order = failed_order(client, product, fault_dir)
    payment = order.payment
    DemoGateway().charge(token=payment.card_token, amount=payment.amount, idempotency_key=payment.idempotency_key)
    told = order.notifications.filter(idempotency_key=f"order:{order.pk}:failed:email", status=Notification.Status.SENT)
    wait_for(told.exists, message="the customer told the order failed")  # an hour ago, as it were
    Order.objects.filter(pk=order.pk).update(created_at=timezone.now() - timedelta(minutes=61))

    assert maintenance.cancel_stale_orders(minutes=60) == {"cancelled": 1}

    wait_for(lambda: cancelled(order), message="the order cancelled")
    assert_cancelled_once(order, product, 5, mail_dir, sms_gateway, charged=True, told_before=("failed",))
    order.refresh_from_db()
    assert order.failure_reason == "it was not paid within 60 minutes."
    event = OrderEvent.objects.get(order=order, kind="request_cancel")
    assert (event.actor, event.from_status) == ("job:cancel_stale_orders", "failed")
    assert maintenance.cancel_stale_orders(minutes=60) == {"cancelled": 0}


def test_staff_cancel_a_failed_order_never_charged_from_its_admin_page_with_no_refund(
    worker, client, sms_gateway, mail_dir, fault_dir
):
    """The same rule for staff: the order admin offers "Cancel and refund" on a failed order; the
    payment is voided (nothing to refund: the gateway has no charge under its key)."""
    product = make_product(stock=5)
    order = failed_order(client, product, fault_dir)
    assert client.get(f"/api/orders/{order.pk}/").json()["payment"]["label"] == "not taken"  # not "yet"
    staff = User.objects.create_superuser("failures", "failures@example.com", "pw")
    staff_client = Client()
    staff_client.force_login(staff)
    page = staff_client.get(reverse("admin:orders_order_change", args=[order.pk])).content.decode()
    assert "Cancel and refund" in page

    url = reverse("admin:orders_order_cancel", args=[order.pk])
    assert staff_client.post(url, {"reason": "customer asked by phone"}).status_code == 302

    wait_for(lambda: cancelled(order), message="the order cancelled")
    assert_cancelled_once(order, product, 5, mail_dir, sms_gateway, charged=False, told_before=("failed",))
    assert "you have not been charged" in sms_gateway.accepted(to=order.phone)[0].body
    event = OrderEvent.objects.get(order=order, kind="request_cancel")
    assert (event.user, event.from_status, event.note) == (staff, "failed", "customer asked by phone")
    assert client.get(f"/api/orders/{order.pk}/").json()["payment"]["status"] == Payment.Status.VOIDED


def test_a_declined_refund_is_a_dead_letter_then_retried_from_the_console_refunds_once(
    worker, client, sms_gateway, mail_dir, fault_dir
):
    product = make_product(stock=5)
    staff = User.objects.create_superuser("refunds", "refunds@example.com", "pw")
    with switches.slow(fault_dir, switches.SHIPMENT, 2) as shipping:
        order = place(client, order_payload((product, 1)))
        wait_for(shipping.exists, message="create_shipment running")
        with switches.failing(fault_dir, switches.REFUND):
            assert cancel(client, order).status_code == 202
            letter = wait_for(lambda: DeadLetter.objects.about(order).first(), message="the refund dead-lettered")

    assert letter.task_name == "orders.tasks.refund_payment"
    assert status(order) == Order.Status.CANCELLING  # not lost: waiting for staff, nothing else ran
    assert DemoGatewayCharge.objects.get().refunded_at is None
    assert not order.notifications.exists()

    staff_client = Client()
    staff_client.force_login(staff)
    response = staff_client.post(reverse("admin:tasks_admin_taskrecord_retry", args=[letter.pk]), {"reason": "fixed"})
    assert response.status_code == 302

    wait_for(lambda: status(order) == Order.Status.CANCELLED, message="the order cancelled")
    wait_for(lambda: order.notifications.filter(status=Notification.Status.SENT).count() == 2, message="told")
    charge = DemoGatewayCharge.objects.get()
    assert charge.refunded_at is not None and charge.refund_requests == 1
    assert Product.objects.get(pk=product.pk).stock == 5
    assert not DeadLetter.objects.about(order).filter(resolved_at__isnull=True).exists()


def test_staff_cancel_from_the_order_admin_with_their_permission_audited(worker, client, sms_gateway, mail_dir):
    product = make_product(stock=3)
    clerk = User.objects.create_user("clerk", password="pw", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_order"))
    with consuming_paused("orders"):
        order = place(client, order_payload((product, 1)))
        url = reverse("admin:orders_order_cancel", args=[order.pk])
        client.force_login(clerk)
        assert client.post(url, {"reason": "fraud"}).status_code == 403  # no cancel permission
        assert (
            "Cancel and refund"
            not in client.get(reverse("admin:orders_order_change", args=[order.pk])).content.decode()
        )

        clerk.user_permissions.add(Permission.objects.get(codename="cancel_order"))
        clerk = User.objects.get(pk=clerk.pk)
        client.force_login(clerk)
        assert "Cancel and refund" in client.get(reverse("admin:orders_order_change", args=[order.pk])).content.decode()
        assert client.post(url, {"reason": ""}).status_code == 302 and status(order) == Order.Status.PENDING
        assert client.post(url, {"reason": "suspected fraud"}).status_code == 302

    wait_for(lambda: cancelled(order), message="the order cancelled")
    event = OrderEvent.objects.get(order=order, kind="request_cancel")
    assert (event.user, event.actor, event.note) == (clerk, "staff:clerk", "suspected fraud") and event.at
    assert "refund_payment" in client.get(reverse("admin:orders_order_change", args=[order.pk])).content.decode()


def in_thread(call) -> tuple[threading.Thread, dict]:
    """Run `call` in a thread with its own database connection; its result or error in the dict."""
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = call()
        except Exception as exc:
            outcome["result"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.fixture
def paid_order(monkeypatch) -> Order:
    # In-process: neither workflow is sent (a worker of the session may be running).
    monkeypatch.setattr(workflow, "publish", lambda order, canvas: True)
    monkeypatch.setattr(cancellation.cancellation_workflow, "start", lambda order: {})
    product = make_product(stock=2)
    order = place_order(
        customer=Customer(name="Race", email="race@example.com", phone="+15550100002"),
        shipping_address="1 Street",
        items=[(product.sku, 1)],
        card_number=GOOD_CARD,
    )
    services.charge_payment(str(order.pk))
    return order


def test_a_cancel_arriving_while_the_shipment_is_made_waits_for_it_and_is_refused(paid_order):
    """create_shipment holds the order's row while it ships: the cancel waits, then sees the shipment."""
    with transaction.atomic():
        services.locked(paid_order.pk)  # as create_shipment does, first thing
        thread, outcome = in_thread(lambda: cancellation.request(paid_order.pk, actor="customer"))
        thread.join(0.5)
        assert thread.is_alive()  # blocked on the order's row
        services.create_shipment(str(paid_order.pk))
    thread.join(10)

    assert isinstance(outcome["result"], cancellation.AlreadyShipped)
    assert status(paid_order) == Order.Status.PAID and Shipment.objects.filter(order=paid_order).exists()


def test_a_shipment_arriving_while_the_order_is_cancelled_waits_for_it_and_ships_nothing(paid_order):
    with transaction.atomic():
        assert cancellation.request(paid_order.pk, actor="customer") is True
        thread, outcome = in_thread(lambda: services.create_shipment(str(paid_order.pk)))
        thread.join(0.5)
        assert thread.is_alive()  # create_shipment waits for the cancel's transaction
    thread.join(10)

    assert isinstance(outcome["result"], StepNotAllowed)
    assert status(paid_order) == Order.Status.CANCELLING and not Shipment.objects.filter(order=paid_order).exists()
