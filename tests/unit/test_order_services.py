"""The order workflow's services: each step has its effect once, however often it runs, and only in
the order states that allow it; an order that stops tells its customer once, after the commit."""

import json
import re

import pytest
from django.core import mail
from django.db import transaction
from django.db.models import Q

from notifications import services as notifications
from notifications.models import Notification
from orders import cancellation, services, stock
from orders.checkout import Customer, place_order
from orders.errors import InsufficientStock, MessageCancelled, NoFailedStep, OrderActionRefused, StepNotAllowed
from orders.models import DemoGatewayCharge, Order, OrderEvent, Payment, Shipment, WorkflowStep
from orders.payments import DemoGateway, PaymentDeclined
from shop.models import Product
from tasks_admin.errors import PermanentProviderError
from tasks_admin.models import PLANNED, SKIPPED, TaskRecord
from tests.factories import DECLINED_CARD, GOOD_CARD, make_product, reach
from tests.fakes.sms_gateway import FakeSmsGateway

pytestmark = pytest.mark.django_db

Status = Order.Status
State = WorkflowStep.State
NOT_PAID = [Status.PENDING, Status.PROCESSING, Status.CANCELLED, Status.FAILED]


@pytest.fixture(autouse=True)
def local_providers(settings, tmp_path):
    settings.PAYMENT_DEMO_LATENCY = 0
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SMS_PROVIDER = "file"
    settings.SMS_FILE_PATH = str(tmp_path / "sms.log")


class CountingGateway(DemoGateway):
    """The demo gateway, counting the charge requests the shop sends it."""

    charges: list[str] = []

    def charge(self, *, token, amount, idempotency_key):
        CountingGateway.charges.append(idempotency_key)
        return super().charge(token=token, amount=amount, idempotency_key=idempotency_key)


@pytest.fixture
def gateway(monkeypatch) -> type[CountingGateway]:
    CountingGateway.charges = []
    monkeypatch.setattr(services, "get_gateway", lambda: CountingGateway())
    return CountingGateway


def place(*items: tuple[Product, int], card_number: str = GOOD_CARD) -> Order:
    return place_order(
        customer=Customer(name="Alan Turing", email="alan@example.com", phone="+441619460000"),
        shipping_address="Bletchley Park",
        items=[(product.sku, quantity) for product, quantity in items],
        card_number=card_number,
    )


def paid(*items: tuple[Product, int]) -> Order:
    """An order placed and charged, as the charge step leaves it."""
    order = place(*items)
    services.charge_payment(str(order.pk))
    order.refresh_from_db()
    assert order.status == Status.PAID
    return order


def confirmed(*items: tuple[Product, int]) -> Order:
    order = paid(*items)
    for step in (services.create_shipment, services.record_sales, services.confirm_order):
        step(str(order.pk))
    order.refresh_from_db()
    assert order.status == Status.CONFIRMED
    return order


def status_of(order: Order) -> str:
    return Order.objects.values_list("status", flat=True).get(pk=order.pk)


def stock_of(product: Product) -> int:
    return Product.objects.values_list("stock", flat=True).get(pk=product.pk)


def sold(product: Product) -> int:
    return Product.objects.values_list("units_sold", flat=True).get(pk=product.pk)


def step_states(order: Order) -> dict[str, str]:
    return dict(order.steps.values_list("name", "state"))


def fail_step(order: Order, name: str, error: str = "RuntimeError: boom") -> None:
    """A step that failed for good, as its task records it (orders/steps.py)."""
    assert services.settle_step(order.pk, name, State.FAILURE, error=error)


# charge_payment


def test_charge_payment_charges_the_card_once_even_when_run_twice_and_the_order_is_paid(gateway):
    product = make_product(stock=5, price="20.00")
    order = place((product, 2))

    first = services.charge_payment(str(order.pk))
    second = services.charge_payment(str(order.pk))

    assert second == first
    charge = DemoGatewayCharge.objects.get()
    assert (charge.reference, charge.amount, charge.requests) == (first, order.total, 1)
    assert len(gateway.charges) == 1
    payment = Payment.objects.get(order=order)
    assert (payment.status, payment.gateway_reference) == (Payment.Status.CAPTURED, first)
    assert payment.captured_at is not None
    assert status_of(order) == Status.PAID
    assert step_states(order)["charge_payment"] == State.SUCCESS
    assert stock_of(product) == 3  # still reserved: paid, not yet shipped
    assert not Notification.objects.exists()  # the customer hears once the order is confirmed


def test_a_declined_card_cancels_the_order_releases_its_stock_once_and_queues_one_cancellation_email(
    gateway, deliveries, django_capture_on_commit_callbacks
):
    product = make_product(stock=5)
    order = place((product, 3), card_number=DECLINED_CARD)
    assert stock_of(product) == 2

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(PaymentDeclined):
        services.charge_payment(str(order.pk))
    # A redelivered charge does not ask the gateway again, release again or tell again.
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(PaymentDeclined, match="declined"):
        services.charge_payment(str(order.pk))

    order.refresh_from_db()
    assert order.status == Status.CANCELLED
    assert "declined" in order.failure_reason
    assert stock_of(product) == 5
    assert len(gateway.charges) == 1 and not DemoGatewayCharge.objects.exists()
    payment = Payment.objects.get(order=order)
    assert payment.status == Payment.Status.DECLINED and "declined" in payment.error
    # The steps after the charge will not run; the charge records its own failure (its task).
    assert step_states(order) == {
        "charge_payment": State.PENDING,
        "create_shipment": State.SKIPPED,
        "record_sales": State.SKIPPED,
        "confirm_order": State.SKIPPED,
    }
    key = f"order:{order.pk}:cancelled:email"
    assert deliveries == [key]  # handed to its delivery task once committed, once
    [notice] = Notification.objects.filter(order=order)
    assert (notice.idempotency_key, notice.channel, notice.recipient) == (key, "email", "alan@example.com")
    notifications.deliver(key)
    [message] = mail.outbox
    assert message.subject == f"Your order {order.number} was cancelled"
    assert "declined" in message.body and "not been charged" in message.body


@pytest.mark.parametrize("status", [Status.CANCELLED, Status.FAILED])
def test_charging_an_order_that_was_stopped_charges_nothing(gateway, status):
    order = reach(place((make_product(), 1)), status)

    with pytest.raises(StepNotAllowed, match=Status(status).label):
        services.charge_payment(str(order.pk))

    assert gateway.charges == []
    assert not DemoGatewayCharge.objects.exists()
    assert Payment.objects.get(order=order).status == Payment.Status.PENDING
    assert status_of(order) == status


def test_a_charge_that_failed_at_the_gateway_leaves_the_order_processing_for_its_retry(monkeypatch):
    class Down(DemoGateway):
        def charge(self, **kwargs):
            raise ConnectionError("gateway unreachable")

    order = place((make_product(), 1))
    monkeypatch.setattr(services, "get_gateway", Down)

    with pytest.raises(ConnectionError):
        services.charge_payment(str(order.pk))

    assert status_of(order) == Status.PROCESSING  # never stale: its task retries it, or fails it
    assert Payment.objects.get(order=order).status == Payment.Status.PENDING


# create_shipment, record_sales, confirm_order


def test_create_shipment_creates_one_shipment_per_paid_order_under_a_random_reference():
    order = paid((make_product(), 1))

    first = services.create_shipment(str(order.pk))
    second = services.create_shipment(str(order.pk))

    assert second == first
    assert re.fullmatch(r"SH-[0-9A-F]{12}", first)
    shipment = Shipment.objects.get()
    assert (shipment.order_id, shipment.reference, shipment.status) == (order.pk, first, Shipment.Status.READY)
    assert step_states(order)["create_shipment"] == State.SUCCESS


@pytest.mark.parametrize("status", [*NOT_PAID, Status.ON_HOLD])
def test_nothing_is_shipped_for_an_order_that_is_not_paid(status):
    order = reach(place((make_product(), 1)), status)

    with pytest.raises(StepNotAllowed, match="not shipping"):
        services.create_shipment(str(order.pk))

    assert not Shipment.objects.exists()
    assert step_states(order)["create_shipment"] == State.PENDING
    assert status_of(order) == status


def test_record_sales_counts_each_paid_orders_units_once():
    mug, pot = make_product(stock=10), make_product(stock=10)
    order = paid((mug, 3), (pot, 1))

    assert services.record_sales(str(order.pk)) is True
    assert services.record_sales(str(order.pk)) is False

    assert (sold(mug), sold(pot)) == (3, 1)
    assert step_states(order)["record_sales"] == State.SUCCESS


def test_record_sales_adds_to_earlier_orders_sales():
    mug = make_product(stock=10)
    first, second = paid((mug, 2)), paid((mug, 3))

    services.record_sales(str(first.pk))
    services.record_sales(str(second.pk))
    services.record_sales(str(first.pk))

    assert sold(mug) == 5


@pytest.mark.parametrize("status", [*NOT_PAID, Status.ON_HOLD])
def test_the_sales_of_an_order_that_is_not_paid_are_never_counted(status):
    # Counted only once paid: a stopped order never has sales to take back out.
    product = make_product(stock=5)
    order = reach(place((product, 2)), status)

    with pytest.raises(StepNotAllowed, match="not counting"):
        services.record_sales(str(order.pk))

    assert sold(product) == 0
    assert Order.objects.get(pk=order.pk).sales_recorded_at is None


def test_confirm_order_confirms_a_paid_shipped_counted_order_and_queues_its_email_and_sms_once():
    product = make_product(stock=5, name="Enigma")
    order = paid((product, 2))
    services.create_shipment(str(order.pk))
    services.record_sales(str(order.pk))

    assert services.confirm_order(str(order.pk)) is True
    assert services.confirm_order(str(order.pk)) is False  # a redelivery confirms nothing twice

    assert status_of(order) == Status.CONFIRMED
    assert step_states(order) == dict.fromkeys(step_states(order), State.SUCCESS)
    queued = {n.channel: n for n in Notification.objects.filter(order=order)}
    assert sorted(queued) == ["email", "sms"]
    assert {n.status for n in queued.values()} == {Notification.Status.PENDING}
    assert (queued["email"].recipient, queued["sms"].recipient) == ("alan@example.com", "+441619460000")
    assert queued["email"].subject == f"Your order {order.number} is confirmed"
    assert "Enigma" in queued["email"].body and order.number in queued["sms"].body
    assert (stock_of(product), sold(product)) == (3, 2)  # sold: not released


@pytest.mark.parametrize("done", [["create_shipment"], ["record_sales"], []], ids=["unsold", "unshipped", "neither"])
def test_a_paid_order_is_not_confirmed_before_it_is_shipped_and_counted(done):
    order = paid((make_product(), 1))
    for step in done:
        getattr(services, step)(str(order.pk))

    with pytest.raises(StepNotAllowed, match="not confirming"):
        services.confirm_order(str(order.pk))

    assert status_of(order) == Status.PAID
    assert not Notification.objects.exists()


@pytest.mark.parametrize("status", [*NOT_PAID, Status.ON_HOLD])
def test_an_order_that_is_not_paid_is_never_confirmed(status):
    order = reach(place((make_product(), 1)), status)

    with pytest.raises(StepNotAllowed, match="not confirming"):
        services.confirm_order(str(order.pk))

    assert status_of(order) == status
    assert not Notification.objects.exists()


# confirmation messages


def test_the_confirmation_email_is_sent_once_to_the_customer_however_often_its_task_runs():
    order = confirmed((make_product(name="Enigma"), 1))

    services.send_confirmation(str(order.pk), "email")
    services.send_confirmation(str(order.pk), "email")

    [message] = mail.outbox
    assert message.to == ["alan@example.com"]
    assert message.subject == f"Your order {order.number} is confirmed"
    assert "Enigma" in message.body
    assert [mimetype for _, mimetype in message.alternatives] == ["text/html"]


def test_the_confirmation_sms_is_sent_once_to_the_customer_however_often_its_task_runs(settings):
    order = confirmed((make_product(), 1))

    services.send_confirmation(str(order.pk), "sms")
    services.send_confirmation(str(order.pk), "sms")

    with open(settings.SMS_FILE_PATH, encoding="utf-8") as log:
        records = [json.loads(line) for line in log]
    assert len(records) == 1
    assert records[0]["to"] == "+441619460000"
    assert order.number in records[0]["body"]


def test_a_refused_confirmation_sms_leaves_the_confirmed_order_confirmed_and_its_stock_sold(settings):
    # Replaces "a refused SMS fails the order": once paid, a message never stops the order.
    product = make_product(stock=4)
    order = confirmed((product, 2))
    with FakeSmsGateway() as sms_gateway:
        settings.SMS_PROVIDER, settings.SMS_HTTP_URL = "http", sms_gateway.url
        sms_gateway.script(400)
        with pytest.raises(PermanentProviderError):
            services.send_confirmation(str(order.pk), "sms")
    services.send_confirmation(str(order.pk), "email")

    order.refresh_from_db()
    assert (order.status, order.failure_reason, order.stock_released_at) == (Status.CONFIRMED, "", None)
    assert (stock_of(product), sold(product)) == (2, 2)
    assert Notification.objects.get(order=order, channel="sms").status == Notification.Status.FAILED
    assert [m.subject for m in mail.outbox] == [f"Your order {order.number} is confirmed"]  # nothing contradicting
    assert Payment.objects.get(order=order).status == Payment.Status.CAPTURED


# stop_after_failure: the error callback of the fulfilment steps


def test_a_charge_whose_replies_were_all_lost_but_went_through_holds_the_paid_order_not_fails_it(
    deliveries, django_capture_on_commit_callbacks
):
    """The gateway took the money and every reply timed out: the customer must not be told "not
    charged" and have their stock released; the order is paid, and staff continue it."""
    product = make_product(stock=5)
    order = reach(place((product, 2)), Status.PROCESSING)
    payment = order.payment
    reference = DemoGateway().charge(
        token=payment.card_token, amount=payment.amount, idempotency_key=payment.idempotency_key
    )
    fail_step(order, "charge_payment", "TransientProviderError: gateway timeout")

    with django_capture_on_commit_callbacks(execute=True):
        assert services.stop_after_failure(str(order.pk)) == Status.ON_HOLD

    payment.refresh_from_db()
    assert (payment.status, payment.gateway_reference) == (Payment.Status.CAPTURED, reference)
    assert step_states(order)["charge_payment"] == State.SUCCESS
    assert stock_of(product) == 3  # kept: the order is paid
    assert deliveries == []  # nothing told that the confirmation would contradict


@pytest.mark.parametrize("status", [Status.PENDING, Status.PROCESSING])
def test_a_charge_that_failed_for_good_fails_the_order_releases_its_stock_and_tells_the_customer_once(
    status, deliveries, django_capture_on_commit_callbacks
):
    product = make_product(stock=5)
    order = reach(place((product, 2)), status)
    fail_step(order, "charge_payment", "TransientProviderError: gateway timeout")

    with django_capture_on_commit_callbacks(execute=True):
        assert services.stop_after_failure(str(order.pk)) == Status.FAILED
    with django_capture_on_commit_callbacks(execute=True):
        assert services.stop_after_failure(str(order.pk)) == Status.FAILED

    order.refresh_from_db()
    assert order.status == Status.FAILED
    assert stock_of(product) == 5  # released once
    assert step_states(order) == {
        "charge_payment": State.FAILURE,
        "create_shipment": State.SKIPPED,
        "record_sales": State.SKIPPED,
        "confirm_order": State.SKIPPED,
    }
    key = f"order:{order.pk}:failed:email"
    assert deliveries == [key]
    notifications.deliver(key)
    [message] = mail.outbox
    assert message.to == ["alan@example.com"]
    assert message.subject == f"A problem with your order {order.number}"
    assert "could not take the payment" in message.body and "not been charged" in message.body
    assert "gateway timeout" not in message.body  # the error is for staff, on the step
    event = OrderEvent.objects.get(order=order)
    assert (event.kind, event.from_status, event.to_status, event.actor) == (
        "fail_payment",
        status,
        Status.FAILED,
        "workflow:charge_payment",
    )


@pytest.mark.parametrize("failed", ["create_shipment", "record_sales", "confirm_order"])
def test_a_failed_fulfilment_step_puts_a_paid_order_on_hold_keeps_its_stock_and_tells_the_customer_nothing(
    failed, deliveries, django_capture_on_commit_callbacks
):
    product = make_product(stock=5)
    order = paid((product, 2))
    fail_step(order, failed, "RuntimeError: warehouse API said no")

    with django_capture_on_commit_callbacks(execute=True):
        assert services.stop_after_failure(str(order.pk)) == Status.ON_HOLD
        assert services.stop_after_failure(str(order.pk)) == Status.ON_HOLD  # a duplicate changes nothing

    order.refresh_from_db()
    assert order.status == Status.ON_HOLD
    assert (stock_of(product), order.stock_released_at) == (3, None)  # kept for when staff continue it
    assert Payment.objects.get(order=order).status == Payment.Status.CAPTURED
    assert not Notification.objects.exists() and deliveries == [] and mail.outbox == []
    states = step_states(order)
    assert (states["charge_payment"], states[failed]) == (State.SUCCESS, State.FAILURE)
    assert {state for name, state in states.items() if name not in ("charge_payment", failed)} == {State.SKIPPED}
    # Staff see which step stopped it and why, in the audit trail.
    event = OrderEvent.objects.get(order=order)
    assert (event.kind, event.actor) == ("hold", f"workflow:{failed}")
    assert failed in event.note and "warehouse API said no" in event.note


def test_the_hold_names_the_step_that_failed_even_when_an_earlier_sibling_has_not_run_yet():
    order = paid((make_product(), 1))
    fail_step(order, "record_sales")  # create_shipment, before it, still to do

    services.stop_after_failure(str(order.pk))

    assert OrderEvent.objects.get(order=order).actor == "workflow:record_sales"
    assert step_states(order)["create_shipment"] == State.SKIPPED


@pytest.mark.parametrize("status", [Status.CONFIRMED, Status.ON_HOLD, Status.CANCELLED, Status.FAILED])
def test_the_error_callback_leaves_an_order_that_moved_on_alone(status, deliveries, django_capture_on_commit_callbacks):
    product = make_product(stock=5)
    order = reach(place((product, 2)), status)
    fail_step(order, "create_shipment")

    with django_capture_on_commit_callbacks(execute=True):
        assert services.stop_after_failure(str(order.pk)) == status

    order.refresh_from_db()
    assert (order.status, order.stock_released_at) == (status, None)
    assert stock_of(product) == 3
    assert not Notification.objects.exists() and deliveries == []
    assert not OrderEvent.objects.exists()


def test_the_error_callback_stops_no_order_whose_steps_did_not_fail():
    # An error outside every step (a broker that could not take the next message): the order
    # stays active for the stuck-workflow recovery, and the callback is retried meanwhile.
    product = make_product(stock=5)
    order = place((product, 1))

    with pytest.raises(NoFailedStep):
        services.stop_after_failure(str(order.pk))

    order.refresh_from_db()
    assert order.status == Status.PENDING and order.stock_released_at is None
    assert stock_of(product) == 4


def test_release_stock_puts_the_reserved_units_back_on_sale_once():
    mug, pot = make_product(stock=6), make_product(stock=3)
    order = place((mug, 4), (pot, 3))
    assert (stock_of(mug), stock_of(pot)) == (2, 0)

    with transaction.atomic():
        assert stock.release(order) is True
    with transaction.atomic():
        assert stock.release(order) is False

    assert (stock_of(mug), stock_of(pot)) == (6, 3)


# What staff and jobs may do: cancel, hold, continue


def test_staff_cancel_a_pending_order_stock_released_unrun_tasks_marked_customer_told(
    admin_user, deliveries, django_capture_on_commit_callbacks
):
    product = make_product(stock=5)
    order = place((product, 2))

    with django_capture_on_commit_callbacks(execute=True):
        assert services.cancel_order(order.pk, reason="you asked us to.", actor="staff:admin", user=admin_user)

    order.refresh_from_db()
    assert (order.status, order.failure_reason) == (Status.CANCELLED, "you asked us to.")
    assert stock_of(product) == 5
    assert set(step_states(order).values()) == {State.SKIPPED}
    assert set(TaskRecord.objects.about(order).values_list("state", flat=True)) == {SKIPPED}
    assert deliveries == [f"order:{order.pk}:cancelled:email"]
    event = OrderEvent.objects.get(order=order)
    assert (event.kind, event.from_status, event.to_status, event.actor, event.user) == (
        "cancel",
        Status.PENDING,
        Status.CANCELLED,
        "staff:admin",
        admin_user,
    )


def test_cancelling_a_failed_order_does_not_release_its_stock_twice(deliveries, django_capture_on_commit_callbacks):
    product = make_product(stock=5)
    order = place((product, 2))
    fail_step(order, "charge_payment")
    with django_capture_on_commit_callbacks(execute=True):
        services.stop_after_failure(str(order.pk))
        assert services.cancel_order(order.pk, reason="it was not paid.", actor="job:test")

    assert status_of(order) == Status.CANCELLED
    assert stock_of(product) == 5
    assert deliveries == [f"order:{order.pk}:failed:email", f"order:{order.pk}:cancelled:email"]


@pytest.mark.parametrize("status", [Status.PROCESSING, Status.PAID, Status.CONFIRMED, Status.ON_HOLD, Status.CANCELLED])
def test_an_order_being_charged_or_paid_or_cancelled_cannot_be_cancelled(status, deliveries):
    product = make_product(stock=5)
    order = reach(place((product, 2)), status)

    with pytest.raises(OrderActionRefused, match="cannot cancel"):
        services.cancel_order(order.pk, reason="no", actor="staff:admin")
    # With a condition (a periodic job), it is told so instead.
    assert services.cancel_order(order.pk, reason="no", actor="job:x", condition=Q()) is False

    assert status_of(order) == status
    assert stock_of(product) == 3
    assert not Notification.objects.exists() and deliveries == []


def test_staff_put_a_paid_order_on_hold_and_the_steps_not_run_say_so(admin_user):
    order = paid((make_product(), 1))

    services.hold_order(order.pk, actor="staff:admin", user=admin_user, note="address check")

    assert status_of(order) == Status.ON_HOLD
    assert step_states(order)["create_shipment"] == State.SKIPPED
    assert not Notification.objects.exists()
    assert OrderEvent.objects.get(order=order).kind == "hold"


@pytest.mark.parametrize("status", [*NOT_PAID, Status.CONFIRMED, Status.ON_HOLD])
def test_only_a_paid_order_can_be_put_on_hold(status):
    order = reach(place((make_product(), 1)), status)

    with pytest.raises(OrderActionRefused, match="cannot hold"):
        services.hold_order(order.pk, actor="staff:admin")

    assert status_of(order) == status


def test_continuing_a_failed_order_reserves_its_stock_again_and_sends_its_charge_again(
    admin_user, deliveries, django_capture_on_commit_callbacks
):
    product = make_product(stock=5)
    order = place((product, 2))
    old_charge = order.steps.get(name="charge_payment").task_id
    old_run = list(TaskRecord.objects.about(order).values_list("task_id", flat=True))
    fail_step(order, "charge_payment")
    with django_capture_on_commit_callbacks(execute=True):
        services.stop_after_failure(str(order.pk))
    assert stock_of(product) == 5

    with django_capture_on_commit_callbacks(execute=False) as sent:
        steps = services.continue_order(order.pk, actor="staff:admin", user=admin_user, reason="gateway back")

    order.refresh_from_db()
    assert (order.status, order.failure_reason, order.stock_released_at) == (Status.PENDING, "", None)
    assert stock_of(product) == 3
    assert steps == ["charge_payment", "create_shipment", "record_sales", "confirm_order"]
    assert len(sent) == 1  # the workflow, once committed
    assert order.steps.get(name="charge_payment").task_id != old_charge
    assert set(step_states(order).values()) == {State.PENDING}
    # Nothing of the run it replaces still looks waiting or queued in the task console.
    assert not TaskRecord.objects.filter(task_id__in=old_run, state__in=[PLANNED, "PENDING"]).exists()
    assert OrderEvent.objects.filter(order=order, kind="retry_payment", user=admin_user).exists()


def test_a_failed_order_whose_stock_is_gone_cannot_be_continued():
    product = make_product(stock=2)
    order = place((product, 2))
    fail_step(order, "charge_payment")
    services.stop_after_failure(str(order.pk))
    place((product, 2))  # its units were sold to someone else meanwhile

    with pytest.raises(InsufficientStock):
        services.continue_order(order.pk, actor="staff:admin")

    assert status_of(order) == Status.FAILED
    assert stock_of(product) == 0


def test_continuing_an_order_on_hold_runs_only_its_unfinished_steps_and_does_not_charge_again(
    gateway, django_capture_on_commit_callbacks
):
    order = paid((make_product(), 1))
    services.create_shipment(str(order.pk))
    fail_step(order, "record_sales")
    services.stop_after_failure(str(order.pk))
    gateway.charges.clear()

    with django_capture_on_commit_callbacks(execute=False):
        steps = services.continue_order(order.pk, actor="staff:admin")

    assert steps == ["record_sales", "confirm_order"]
    assert status_of(order) == Status.PAID
    assert step_states(order) == {
        "charge_payment": State.SUCCESS,
        "create_shipment": State.SUCCESS,
        "record_sales": State.PENDING,
        "confirm_order": State.PENDING,
    }
    # ...and it completes as any paid order does, counting and confirming once.
    services.record_sales(str(order.pk))
    assert services.confirm_order(str(order.pk)) is True
    assert status_of(order) == Status.CONFIRMED
    assert gateway.charges == [] and Shipment.objects.filter(order=order).count() == 1


@pytest.mark.parametrize("status", [Status.CONFIRMED, Status.CANCELLED])
def test_a_confirmed_or_cancelled_order_cannot_be_continued(status, django_capture_on_commit_callbacks):
    order = reach(place((make_product(), 1)), status)

    with django_capture_on_commit_callbacks(execute=False) as sent, pytest.raises(OrderActionRefused):
        services.continue_order(order.pk, actor="staff:admin")

    assert sent == []
    assert status_of(order) == status


# Confirmation messages staff stop or send again


def test_a_cancelled_confirmation_is_not_sent_and_reopening_it_sends_it_to_the_corrected_address(settings):
    order = confirmed((make_product(), 1))

    assert services.cancel_confirmation(order.pk, "email") is True
    with pytest.raises(MessageCancelled):
        services.send_confirmation(str(order.pk), "email")
    assert mail.outbox == []

    Order.objects.filter(pk=order.pk).update(email="alan.turing@example.com")
    reopened = services.reopen_confirmation(order.pk, "email")
    services.send_confirmation(str(order.pk), "email")

    assert reopened.recipient == "alan.turing@example.com"
    assert [m.to for m in mail.outbox] == [["alan.turing@example.com"]]


def test_a_sent_confirmation_stays_sent_and_is_not_sent_again():
    order = confirmed((make_product(), 1))
    services.send_confirmation(str(order.pk), "email")

    assert services.cancel_confirmation(order.pk, "email") is False
    services.reopen_confirmation(order.pk, "email")
    services.send_confirmation(str(order.pk), "email")

    assert len(mail.outbox) == 1


@pytest.mark.parametrize("status", [Status.PAID, Status.ON_HOLD, Status.CANCELLED])
def test_no_confirmation_is_reopened_for_an_order_that_is_not_confirmed(status):
    order = reach(place((make_product(), 1)), status)

    with pytest.raises(OrderActionRefused, match="nothing to confirm"):
        services.reopen_confirmation(order.pk, "email")

    assert not Notification.objects.exists()


# Who may cancel through the cancellation workflow (orders/cancellation.py): the customer's and
# staff's rule alike


@pytest.mark.parametrize("status", [Status.PENDING, Status.PAID, Status.ON_HOLD, Status.FAILED])
def test_an_order_that_has_not_shipped_is_offered_cancellation_a_failed_one_included(status):
    order = reach(place((make_product(stock=5), 1)), status)

    assert cancellation.refusal(order) is None and cancellation.offered(order)


@pytest.mark.parametrize("status", [Status.PAID, Status.ON_HOLD, Status.CONFIRMED])
def test_an_order_that_shipped_is_refused_cancellation_and_not_offered_it(status):
    order = reach(place((make_product(stock=5), 1)), status)
    Shipment.objects.create(order=order, reference=services.new_shipment_reference())

    assert isinstance(cancellation.refusal(order), cancellation.AlreadyShipped) and not cancellation.offered(order)
    with pytest.raises(cancellation.AlreadyShipped, match="already shipped"):
        cancellation.request(order.pk, actor="customer")
    assert status_of(order) == status


def test_an_order_whose_charge_is_at_the_gateway_is_refused_cancellation_for_now():
    order = reach(place((make_product(stock=5), 1)), Status.PROCESSING)

    assert "try again in a minute" in str(cancellation.refusal(order)) and not cancellation.offered(order)
    with pytest.raises(OrderActionRefused):
        cancellation.request(order.pk, actor="customer")
    assert status_of(order) == Status.PROCESSING


def test_a_failed_order_is_moved_to_cancelling_by_its_customer_and_audited(monkeypatch):
    sent = []
    monkeypatch.setattr(cancellation.cancellation_workflow, "start", lambda order: sent.append(order.pk))
    order = reach(place((make_product(stock=5), 1)), Status.FAILED)

    assert cancellation.request(order.pk, actor="customer", note="charged anyway?") is True

    assert status_of(order) == Status.CANCELLING and sent == [order.pk]
    event = OrderEvent.objects.get(order=order, kind="request_cancel")
    assert (event.from_status, event.to_status, event.note) == (Status.FAILED, Status.CANCELLING, "charged anyway?")
