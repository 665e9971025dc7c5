"""The order workflow's services: each step has its effect once, however often it runs."""

import json

import pytest
from celery import states
from django.core import mail
from django.db import transaction

from orders import services, stock, tasks
from orders.checkout import Customer, place_order
from orders.errors import NoFailedStep
from orders.models import DemoGatewayCharge, Order, Payment, Shipment, WorkflowStep
from orders.payments import DemoGateway, PaymentDeclined
from shop.errors import PermanentProviderError
from shop.models import Product
from tests.factories import DECLINED_CARD, GOOD_CARD, make_product
from tests.fakes.sms_gateway import FakeSmsGateway

pytestmark = pytest.mark.django_db


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


def set_status(order: Order, status: str) -> None:
    Order.objects.filter(pk=order.pk).update(status=status)


def status_of(order: Order) -> str:
    return Order.objects.values_list("status", flat=True).get(pk=order.pk)


def stock_of(product: Product) -> int:
    return Product.objects.values_list("stock", flat=True).get(pk=product.pk)


# charge_payment


def test_charge_payment_charges_the_card_once_even_when_run_twice(gateway):
    product = make_product(stock=5, price="20.00")
    order = place((product, 2))

    first = services.charge_payment(str(order.pk))
    second = services.charge_payment(str(order.pk))

    assert second == first
    charge = DemoGatewayCharge.objects.get()
    assert (charge.reference, charge.amount, charge.requests) == (first, order.total, 1)
    assert len(gateway.charges) == 1
    payment = Payment.objects.get(order=order)
    assert payment.status == Payment.Status.CAPTURED
    assert payment.gateway_reference == first
    assert payment.captured_at is not None
    assert status_of(order) == Order.Status.PROCESSING


def test_a_declined_card_marks_the_payment_declined_and_a_second_run_does_not_ask_the_gateway_again(gateway):
    order = place((make_product(), 1), card_number=DECLINED_CARD)

    with pytest.raises(PaymentDeclined):
        services.charge_payment(str(order.pk))
    payment = Payment.objects.get(order=order)
    assert payment.status == Payment.Status.DECLINED
    assert "declined" in payment.error
    assert len(gateway.charges) == 1

    with pytest.raises(PaymentDeclined, match="declined"):
        services.charge_payment(str(order.pk))

    assert len(gateway.charges) == 1
    assert not DemoGatewayCharge.objects.exists()
    assert Payment.objects.get(order=order).status == Payment.Status.DECLINED


@pytest.mark.parametrize("status", [Order.Status.CANCELLED, Order.Status.FAILED])
def test_charging_an_order_that_was_stopped_charges_nothing(gateway, status):
    order = place((make_product(), 1))
    set_status(order, status)

    with pytest.raises(services.OrderNotActive, match=status):
        services.charge_payment(str(order.pk))

    assert gateway.charges == []
    assert not DemoGatewayCharge.objects.exists()
    assert Payment.objects.get(order=order).status == Payment.Status.PENDING
    assert status_of(order) == status


# create_shipment, record_sales, confirm_order


def test_create_shipment_creates_one_shipment_per_order():
    order = place((make_product(), 1))

    first = services.create_shipment(str(order.pk))
    second = services.create_shipment(str(order.pk))

    assert second == first
    shipment = Shipment.objects.get()
    assert (shipment.order_id, shipment.reference, shipment.status) == (order.pk, first, Shipment.Status.READY)


def test_record_sales_counts_each_orders_units_once():
    mug, pot = make_product(stock=10), make_product(stock=10)
    order = place((mug, 3), (pot, 1))

    assert services.record_sales(str(order.pk)) is True
    assert services.record_sales(str(order.pk)) is False

    assert Product.objects.get(pk=mug.pk).units_sold == 3
    assert Product.objects.get(pk=pot.pk).units_sold == 1


def test_record_sales_adds_to_earlier_orders_sales():
    mug = make_product(stock=10)
    first, second = place((mug, 2)), place((mug, 3))

    services.record_sales(str(first.pk))
    services.record_sales(str(second.pk))
    services.record_sales(str(first.pk))

    assert Product.objects.get(pk=mug.pk).units_sold == 5


@pytest.mark.parametrize("status", [Order.Status.PENDING, Order.Status.PROCESSING])
def test_confirm_order_confirms_an_active_order(status):
    order = place((make_product(), 1))
    set_status(order, status)

    assert services.confirm_order(str(order.pk)) is True

    assert status_of(order) == Order.Status.CONFIRMED


@pytest.mark.parametrize("status", [Order.Status.CANCELLED, Order.Status.FAILED])
def test_confirm_order_does_not_confirm_a_stopped_order(status):
    order = place((make_product(), 1))
    set_status(order, status)

    assert services.confirm_order(str(order.pk)) is False

    assert status_of(order) == status


# confirmation messages


def test_send_confirmation_email_sends_one_email_to_the_customer_however_often_it_runs():
    order = place((make_product(name="Enigma"), 1))

    services.send_confirmation_email(str(order.pk))
    services.send_confirmation_email(str(order.pk))

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alan@example.com"]
    assert order.number in message.subject
    assert "Enigma" in message.body
    assert [mimetype for _, mimetype in message.alternatives] == ["text/html"]


def test_send_confirmation_sms_sends_one_sms_to_the_customer_however_often_it_runs(settings):
    order = place((make_product(), 1))

    services.send_confirmation_sms(str(order.pk))
    services.send_confirmation_sms(str(order.pk))

    with open(settings.SMS_FILE_PATH, encoding="utf-8") as log:
        records = [json.loads(line) for line in log]
    assert len(records) == 1
    assert records[0]["to"] == "+441619460000"
    assert order.number in records[0]["body"]


# fail_order


def test_fail_order_cancels_a_declined_order_releases_stock_once_and_tells_the_customer_once():
    product = make_product(stock=5)
    order = place((product, 3), card_number=DECLINED_CARD)
    assert stock_of(product) == 2
    with pytest.raises(PaymentDeclined):
        services.charge_payment(str(order.pk))

    assert services.fail_order(str(order.pk)) == Order.Status.CANCELLED
    assert services.fail_order(str(order.pk)) == Order.Status.CANCELLED

    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED
    assert "declined" in order.failure_reason
    assert order.stock_released_at is not None
    assert stock_of(product) == 5
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == [order.email]
    assert mail.outbox[0].subject == f"Your order {order.number} was cancelled"
    assert "declined" in mail.outbox[0].body


def test_release_stock_puts_the_reserved_units_back_on_sale_once():
    mug, pot = make_product(stock=6), make_product(stock=3)
    order = place((mug, 4), (pot, 3))
    assert (stock_of(mug), stock_of(pot)) == (2, 0)

    with transaction.atomic():
        assert stock.release(order) is True
    with transaction.atomic():
        assert stock.release(order) is False

    assert (stock_of(mug), stock_of(pot)) == (6, 3)


def run_steps_until_sms_fails(order: Order, gateway: FakeSmsGateway, *, email_first: bool) -> None:
    """Run the workflow's steps as a worker would, with the SMS gateway refusing the message."""
    order_id = str(order.pk)
    tasks.charge_payment(order_id)
    tasks.create_shipment(order_id)
    if email_first:
        tasks.send_confirmation_email(order_id)
    gateway.script(400)
    with pytest.raises(PermanentProviderError):
        tasks.send_confirmation_sms(order_id)


def test_fail_order_after_a_failed_step_marks_the_order_failed_with_the_step_and_cancels_the_shipment(settings):
    product = make_product(stock=4)
    order = place((product, 2))
    with FakeSmsGateway() as gateway:
        settings.SMS_PROVIDER, settings.SMS_HTTP_URL = "http", gateway.url
        run_steps_until_sms_fails(order, gateway, email_first=True)
    mail.outbox.clear()  # the confirmation e-mail

    assert services.fail_order(str(order.pk)) == Order.Status.FAILED
    assert services.fail_order(str(order.pk)) == Order.Status.FAILED

    order.refresh_from_db()
    assert order.status == Order.Status.FAILED
    assert "send_confirmation_sms" in order.failure_reason
    # The customer sees which step stopped; the provider's error stays on the step, for staff.
    assert "PermanentProviderError" not in order.failure_reason
    assert "PermanentProviderError" in order.steps.get(name="send_confirmation_sms").error
    assert stock_of(product) == 4
    assert Shipment.objects.get(order=order).status == Shipment.Status.CANCELLED
    # The card was charged: the payment stays for staff to continue or refund.
    assert Payment.objects.get(order=order).status == Payment.Status.CAPTURED
    assert [m.subject for m in mail.outbox] == [f"A problem with your order {order.number}"]


def test_fail_order_names_the_failed_step_even_when_an_earlier_sibling_has_not_run_yet(settings):
    order = place((make_product(), 1))
    with FakeSmsGateway() as gateway:
        settings.SMS_PROVIDER, settings.SMS_HTTP_URL = "http", gateway.url
        run_steps_until_sms_fails(order, gateway, email_first=False)
    assert WorkflowStep.objects.get(order=order, name="send_confirmation_sms").state == states.FAILURE

    services.fail_order(str(order.pk))

    order.refresh_from_db()
    assert order.status == Order.Status.FAILED
    assert "send_confirmation_sms" in order.failure_reason


def test_fail_order_leaves_a_confirmed_order_alone():
    product = make_product(stock=5)
    order = place((product, 2))
    order_id = str(order.pk)
    services.charge_payment(order_id)
    services.create_shipment(order_id)
    services.confirm_order(order_id)

    assert services.fail_order(order_id) == Order.Status.CONFIRMED

    order.refresh_from_db()
    assert (order.status, order.failure_reason, order.stock_released_at) == (Order.Status.CONFIRMED, "", None)
    assert stock_of(product) == 3
    assert Shipment.objects.get(order=order).status == Shipment.Status.READY
    assert mail.outbox == []


@pytest.mark.parametrize("status", [Order.Status.FAILED, Order.Status.CANCELLED])
def test_record_sales_does_not_count_an_order_that_was_stopped(status):
    product = make_product(stock=5)
    order = place((product, 2))
    set_status(order, status)

    assert services.record_sales(str(order.pk)) is False
    assert Product.objects.get(pk=product.pk).units_sold == 0


def test_fail_order_takes_counted_sales_back_out_once():
    product = make_product(stock=5)
    other = place((product, 1))
    order = place((product, 2))
    services.record_sales(str(other.pk))
    services.record_sales(str(order.pk))
    assert Product.objects.get(pk=product.pk).units_sold == 3
    order.steps.filter(name="send_confirmation_sms").update(state=states.FAILURE)  # as the step records it

    services.fail_order(str(order.pk))
    services.fail_order(str(order.pk))

    assert Product.objects.get(pk=product.pk).units_sold == 1  # only the other order's unit
    assert services.record_sales(str(order.pk)) is False  # a late redelivery counts nothing
    assert Product.objects.get(pk=product.pk).units_sold == 1


def test_the_error_callback_stops_no_order_whose_steps_did_not_fail():
    # An error outside every step (a broker that could not take the next message): the order
    # stays active for the stuck-workflow recovery, and the callback is retried meanwhile.
    order = place((make_product(stock=5), 1))

    with pytest.raises(NoFailedStep):
        services.fail_order(str(order.pk))

    order.refresh_from_db()
    assert order.status == Order.Status.PENDING and order.stock_released_at is None
