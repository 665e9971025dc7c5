"""The orders' periodic upkeep: stale unpaid orders are cancelled, stuck workflows sent again."""

from datetime import timedelta

import pytest
from celery import states
from django.core import mail
from django.utils import timezone

from notifications.models import Notification
from orders import maintenance, services
from orders.checkout import Customer, place_order
from orders.models import Order, Payment, Shipment, WorkflowStep
from shop.errors import TransientProviderError
from shop.models import Product
from tasks_admin.models import TaskRecord
from tests.factories import GOOD_CARD, make_product
from tests.support import WORKFLOW_STEPS

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def local_providers(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.STALE_ORDER_MINUTES = 60
    settings.STUCK_WORKFLOW_MINUTES = 10


def place(product: Product, quantity: int = 1, *, minutes_ago: int = 0, email: str = "grace@example.com") -> Order:
    """An order placed `minutes_ago` whose workflow was never sent (on_commit does not run here)."""
    order = place_order(
        customer=Customer(name="Grace Hopper", email=email, phone="+12025550123"),
        shipping_address="Arlington",
        items=[(product.sku, quantity)],
        card_number=GOOD_CARD,
    )
    placed_at = timezone.now() - timedelta(minutes=minutes_ago)
    Order.objects.filter(pk=order.pk).update(created_at=placed_at)
    TaskRecord.objects.filter(order=order).update(sent_at=placed_at)  # recorded by the checkout
    return order


def reload(order: Order) -> Order:
    return Order.objects.get(pk=order.pk)


def stock_of(product: Product) -> int:
    return Product.objects.values_list("stock", flat=True).get(pk=product.pk)


def start_charge(order: Order, *, minutes_ago: int, state: str = states.STARTED) -> None:
    WorkflowStep.objects.filter(order=order, name="charge_payment").update(
        state=state, started_at=timezone.now() - timedelta(minutes=minutes_ago)
    )


# cancel_stale_orders


def test_an_unpaid_order_past_the_limit_is_cancelled_its_stock_released_and_the_customer_told_once():
    product = make_product(stock=5)
    order = place(product, 2, minutes_ago=61)
    Shipment.objects.create(order=order, reference="SH-STALE")
    assert stock_of(product) == 3

    assert maintenance.cancel_stale_orders() == {"cancelled": 1, "emailed": 1}

    order = reload(order)
    assert order.status == Order.Status.CANCELLED
    assert order.failure_reason == "it was not paid within 60 minutes."
    assert order.stock_released_at is not None
    assert stock_of(product) == 5
    assert Shipment.objects.get(order=order).status == Shipment.Status.CANCELLED
    [message] = mail.outbox
    assert message.to == ["grace@example.com"]
    assert message.subject == f"Your order {order.number} was cancelled"
    assert "not paid within 60 minutes" in message.body and "not been charged" in message.body
    assert (
        Notification.objects.get(order=order, status="sent").idempotency_key == f"order:{order.pk}:stale-cancel:email"
    )
    assert set(Notification.objects.exclude(status="sent").values_list("status", flat=True)) == {"cancelled"}

    assert maintenance.cancel_stale_orders() == {"cancelled": 0, "emailed": 0}
    assert len(mail.outbox) == 1
    assert stock_of(product) == 5


def test_the_sales_an_unpaid_order_counted_are_taken_back_out():
    product = make_product(stock=5)
    order = place(product, 2, minutes_ago=61)
    Order.objects.filter(pk=order.pk).update(status=Order.Status.PROCESSING)
    services.record_sales(str(order.pk))
    assert Product.objects.get(pk=product.pk).units_sold == 2

    maintenance.cancel_stale_orders()

    assert Product.objects.get(pk=product.pk).units_sold == 0


def test_a_failed_unpaid_order_is_cancelled_without_releasing_its_stock_twice():
    product = make_product(stock=5)
    order = place(product, 2, minutes_ago=61)
    order.steps.filter(name="create_shipment").update(state=states.FAILURE)  # as the step records it
    services.fail_order(str(order.pk))  # failed: stock released already
    assert reload(order).status == Order.Status.FAILED and stock_of(product) == 5

    assert maintenance.cancel_stale_orders()["cancelled"] == 1

    assert reload(order).status == Order.Status.CANCELLED
    assert stock_of(product) == 5


@pytest.mark.parametrize(
    ("minutes_ago", "setup"),
    [
        pytest.param(59, lambda order: None, id="placed-recently"),
        pytest.param(
            61, lambda order: Payment.objects.filter(order=order).update(status=Payment.Status.CAPTURED), id="paid"
        ),
        pytest.param(
            61, lambda order: Order.objects.filter(pk=order.pk).update(status=Order.Status.CONFIRMED), id="confirmed"
        ),
        pytest.param(61, lambda order: start_charge(order, minutes_ago=1), id="charge-running"),
        pytest.param(61, lambda order: start_charge(order, minutes_ago=3, state=states.RETRY), id="charge-retrying"),
    ],
)
def test_orders_that_are_recent_paid_finished_or_being_charged_are_left_alone(minutes_ago, setup):
    product = make_product(stock=5)
    order = place(product, 1, minutes_ago=minutes_ago)
    setup(order)
    status = reload(order).status

    assert maintenance.cancel_stale_orders() == {"cancelled": 0, "emailed": 0}

    assert reload(order).status == status
    assert stock_of(product) == 4
    assert mail.outbox == []


def test_an_order_whose_charge_started_long_ago_and_never_finished_is_cancelled():
    product = make_product(stock=5)
    order = place(product, 1, minutes_ago=120)
    start_charge(order, minutes_ago=90)  # the worker died mid-charge long ago

    assert maintenance.cancel_stale_orders()["cancelled"] == 1


def test_an_order_paid_after_it_was_picked_is_not_cancelled():
    """The check under the row lock: a worker may have charged it since the batch was read."""
    product = make_product(stock=5)
    order = place(product, 1, minutes_ago=61)
    Payment.objects.filter(order=order).update(status=Payment.Status.CAPTURED)

    assert maintenance.cancel_stale_order(order.pk, 60) is False
    assert reload(order).status == Order.Status.PENDING


def test_every_stale_order_is_cancelled_across_batches_even_with_one_skipped():
    product = make_product(stock=10)
    orders = [place(product, 1, minutes_ago=61, email=f"c{i}@example.com") for i in range(5)]
    start_charge(orders[2], minutes_ago=1)

    assert maintenance.cancel_stale_orders(batch_size=2) == {"cancelled": 4, "emailed": 4}

    assert [reload(o).status for o in orders].count(Order.Status.CANCELLED) == 4
    assert reload(orders[2]).status == Order.Status.PENDING


def test_an_email_that_failed_transiently_is_sent_by_the_next_attempt(monkeypatch):
    product = make_product(stock=5)
    order = place(product, 1, minutes_ago=61)
    send_email = maintenance.notifications.send_email

    def mail_server_down(**kwargs):
        raise TransientProviderError("Mail server unavailable")

    monkeypatch.setattr(maintenance.notifications, "send_email", mail_server_down)
    with pytest.raises(TransientProviderError):
        maintenance.cancel_stale_orders()
    assert reload(order).status == Order.Status.CANCELLED

    monkeypatch.setattr(maintenance.notifications, "send_email", send_email)
    assert maintenance.cancel_stale_orders() == {"cancelled": 0, "emailed": 1}
    assert [m.to for m in mail.outbox] == [["grace@example.com"]]


# recover_stuck_workflows


def test_a_stuck_order_has_its_whole_workflow_sent_again_with_new_task_ids(django_capture_on_commit_callbacks):
    order = place(make_product(), minutes_ago=11)
    old_ids = set(order.steps.values_list("task_id", flat=True))

    with django_capture_on_commit_callbacks() as callbacks:
        resent = maintenance.recover_stuck_workflows()

    assert resent == {order.number: WORKFLOW_STEPS}
    assert len(callbacks) == 1  # the workflow, sent once the transaction commits
    assert old_ids.isdisjoint(order.steps.values_list("task_id", flat=True))


def test_only_the_steps_that_did_not_succeed_are_sent_again(django_capture_on_commit_callbacks):
    order = place(make_product(), minutes_ago=30)
    Order.objects.filter(pk=order.pk).update(status=Order.Status.PROCESSING)
    Payment.objects.filter(order=order).update(status=Payment.Status.CAPTURED)
    long_ago = timezone.now() - timedelta(minutes=20)
    WorkflowStep.objects.filter(order=order, name="charge_payment").update(
        state=states.SUCCESS, started_at=long_ago, finished_at=long_ago
    )

    with django_capture_on_commit_callbacks():
        resent = maintenance.recover_stuck_workflows()

    assert resent == {order.number: WORKFLOW_STEPS[1:]}


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(
            lambda order: WorkflowStep.objects.filter(order=order, name="charge_payment").update(
                state=states.STARTED, started_at=timezone.now() - timedelta(minutes=2)
            ),
            id="moved-lately",
        ),
        pytest.param(
            lambda order: TaskRecord.objects.create(
                task_id="t-1", task_name="orders.tasks.charge_payment", order=order, sent_at=timezone.now()
            ),
            id="sent-again-lately",
        ),
        pytest.param(lambda order: Order.objects.filter(pk=order.pk).update(status=Order.Status.FAILED), id="failed"),
        pytest.param(
            lambda order: Order.objects.filter(pk=order.pk).update(created_at=timezone.now() - timedelta(minutes=61)),
            id="unpaid-past-the-stale-limit",
        ),
    ],
)
def test_orders_that_moved_were_just_sent_failed_or_are_due_for_cancelling_are_not_sent_again(
    setup, django_capture_on_commit_callbacks
):
    order = place(make_product(), minutes_ago=11)
    setup(order)

    with django_capture_on_commit_callbacks() as callbacks:
        assert maintenance.recover_stuck_workflows() == {}
    assert callbacks == []


def test_a_paid_order_stuck_past_the_stale_limit_is_still_sent_again(django_capture_on_commit_callbacks):
    order = place(make_product(), minutes_ago=90)
    Payment.objects.filter(order=order).update(status=Payment.Status.CAPTURED)

    with django_capture_on_commit_callbacks():
        assert list(maintenance.recover_stuck_workflows()) == [order.number]


def test_step_records_a_dead_worker_left_behind_are_settled_from_the_order():
    confirmed, failed, running = (place(make_product(stock=5)) for _ in range(3))
    Order.objects.filter(pk=confirmed.pk).update(status=Order.Status.CONFIRMED)
    Order.objects.filter(pk=failed.pk).update(status=Order.Status.FAILED)
    long_ago = timezone.now() - timedelta(minutes=30)
    Order.objects.filter(pk__in=[confirmed.pk, failed.pk]).update(updated_at=long_ago)
    WorkflowStep.objects.filter(order__in=[confirmed, failed, running], name="record_sales").update(
        state=states.STARTED, started_at=long_ago
    )
    WorkflowStep.objects.filter(order=failed, name="send_confirmation_sms").update(state=states.FAILURE)

    settled = maintenance.settle_lost_step_records(minutes=10)

    assert settled == 6 + 1  # every step of the confirmed order; the lost run of the failed one
    assert set(confirmed.steps.values_list("state", flat=True)) == {states.SUCCESS}
    lost = failed.steps.get(name="record_sales")
    assert (lost.state, lost.error) == (states.FAILURE, "No record of how this run ended")
    assert failed.steps.filter(state=states.PENDING).count() == 4  # never ran: left as they are
    assert running.steps.get(name="record_sales").state == states.STARTED  # an active order is not settled
