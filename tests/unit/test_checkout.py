"""Placing an order: stock reservation, pricing and workflow creation, all or nothing."""

from decimal import Decimal

import pytest
from celery import current_app, states
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django_celery_results.models import ChordCounter

from notifications.models import Notification
from orders import workflow
from orders.checkout import Customer, place_order
from orders.errors import CheckoutError, InsufficientStock, UnknownProduct
from orders.models import Order, OrderLine, Payment, WorkflowStep
from orders.payments import InvalidCard
from shop.models import Product
from tasks_admin.cleanup import header_task_ids
from tasks_admin.models import PLANNED, TaskRecord
from tests.factories import GOOD_CARD, make_product
from tests.support import WORKFLOW_STEPS, WORKFLOW_TASKS

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_gateway_latency(settings):
    settings.PAYMENT_DEMO_LATENCY = 0


def place(items, *, card_number: str = GOOD_CARD) -> Order:
    return place_order(
        customer=Customer(name="Grace Hopper", email="grace@example.com", phone="+14155550100"),
        shipping_address="1 Navy Yard\nArlington",
        items=items,
        card_number=card_number,
    )


def stock_of(*products: Product) -> list[int]:
    return [Product.objects.get(pk=p.pk).stock for p in products]


def assert_nothing_recorded() -> None:
    assert Order.objects.count() == 0
    assert OrderLine.objects.count() == 0
    assert Payment.objects.count() == 0
    assert WorkflowStep.objects.count() == 0


def test_place_order_reserves_exactly_the_ordered_quantities():
    mug, pot, untouched = make_product(stock=10), make_product(stock=5), make_product(stock=7)

    place([(mug.sku, 3), (pot.sku, 2)])

    assert stock_of(mug, pot, untouched) == [7, 3, 7]


def test_place_order_records_the_customer_lines_and_a_pending_order():
    mug = make_product(stock=10, name="Mug", price="8.00")

    order = place([(mug.sku, 2)])

    order.refresh_from_db()
    assert order.status == Order.Status.PENDING
    assert (order.customer_name, order.email, order.phone) == ("Grace Hopper", "grace@example.com", "+14155550100")
    assert order.shipping_address == "1 Navy Yard\nArlington"
    (line,) = order.lines.all()
    assert (line.product_id, line.sku, line.name, line.unit_price, line.quantity) == (
        mug.pk,
        mug.sku,
        "Mug",
        Decimal("8.00"),
        2,
    )


def test_place_order_prices_every_line_from_the_database():
    mug, pot = make_product(price="12.50"), make_product(price="3.99")
    # The price changed after the product was listed: the order uses the catalog's current price.
    Product.objects.filter(pk=mug.pk).update(price=Decimal("13.00"))
    mug.refresh_from_db()

    order = place([(mug.sku, 3), (pot.sku, 2)])

    expected = mug.price * 3 + pot.price * 2
    assert order.total == expected
    assert Order.objects.get(pk=order.pk).total == expected
    assert {line.sku: line.unit_price for line in order.lines.all()} == {mug.sku: mug.price, pot.sku: pot.price}
    assert sum(line.line_total for line in order.lines.all()) == expected


def test_place_order_creates_a_pending_payment_for_the_total_without_the_card_number():
    mug = make_product(price="9.99")

    order = place([(mug.sku, 2)], card_number="4242 4242 4242 4242")

    payment = Payment.objects.get(order=order)
    assert payment.status == Payment.Status.PENDING
    assert payment.amount == order.total == mug.price * 2
    assert payment.card_last4 == "4242"
    assert "4242424242424242" not in payment.card_token
    assert str(order.pk) in payment.idempotency_key


def test_each_order_gets_its_own_payment_idempotency_key():
    mug = make_product(stock=10)

    first, second = place([(mug.sku, 1)]), place([(mug.sku, 1)])

    assert first.payment.idempotency_key != second.payment.idempotency_key


def test_place_order_merges_duplicate_skus_into_one_line():
    mug = make_product(stock=10)

    order = place([(mug.sku, 2), (mug.sku, 3)])

    (line,) = order.lines.all()
    assert line.quantity == 5
    assert order.total == mug.price * 5
    assert stock_of(mug) == [5]


def test_duplicate_skus_are_checked_against_the_stock_together():
    mug = make_product(stock=4)

    with pytest.raises(InsufficientStock) as excinfo:
        place([(mug.sku, 2), (mug.sku, 3)])

    assert (excinfo.value.requested, excinfo.value.available) == (5, 4)
    assert stock_of(mug) == [4]
    assert_nothing_recorded()


def test_insufficient_stock_names_the_product_and_the_quantities_and_records_nothing():
    mug = make_product(stock=2, name="Mug")

    with pytest.raises(InsufficientStock) as excinfo:
        place([(mug.sku, 3)])

    error = excinfo.value
    assert (error.sku, error.requested, error.available) == (mug.sku, 3, 2)
    assert "Only 2 of Mug" in str(error)
    assert isinstance(error, CheckoutError)
    assert stock_of(mug) == [2]
    assert_nothing_recorded()


def test_a_short_second_product_leaves_the_first_products_stock_untouched(django_capture_on_commit_callbacks):
    # The plentiful product has the lower primary key, so it is reserved first and must be rolled back.
    plenty = make_product(stock=10)
    short = make_product(stock=1)
    assert plenty.pk < short.pk

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        with pytest.raises(InsufficientStock) as excinfo:
            place([(plenty.sku, 3), (short.sku, 2)])

    assert (excinfo.value.sku, excinfo.value.requested, excinfo.value.available) == (short.sku, 2, 1)
    assert stock_of(plenty, short) == [10, 1]
    assert_nothing_recorded()
    assert callbacks == []  # no workflow is sent for an order that does not exist


def test_stock_is_never_oversold_across_orders():
    mug = make_product(stock=5)
    place([(mug.sku, 3)])

    with pytest.raises(InsufficientStock) as excinfo:
        place([(mug.sku, 3)])

    assert excinfo.value.available == 2
    assert stock_of(mug) == [2]
    assert Order.objects.count() == 1


def test_unknown_sku_is_refused_and_nothing_is_reserved():
    mug = make_product(stock=5)

    with pytest.raises(UnknownProduct) as excinfo:
        place([(mug.sku, 1), ("NO-SUCH-SKU", 1)])

    assert excinfo.value.skus == ["NO-SUCH-SKU"]
    assert "NO-SUCH-SKU" in str(excinfo.value)
    assert stock_of(mug) == [5]
    assert_nothing_recorded()


def test_inactive_product_cannot_be_ordered():
    mug = make_product(stock=5)
    retired = make_product(stock=5)
    Product.objects.filter(pk=retired.pk).update(active=False)

    with pytest.raises(UnknownProduct) as excinfo:
        place([(mug.sku, 1), (retired.sku, 1)])

    assert excinfo.value.skus == [retired.sku]
    assert stock_of(mug, retired) == [5, 5]
    assert_nothing_recorded()


def test_an_empty_cart_cannot_be_checked_out():
    with pytest.raises(CheckoutError, match="empty"):
        place([])

    assert_nothing_recorded()


@pytest.mark.parametrize("quantity", [0, -2])
def test_a_quantity_below_one_is_refused(quantity):
    mug, pot = make_product(stock=5), make_product(stock=5)

    with pytest.raises(CheckoutError, match="at least 1"):
        place([(mug.sku, 1), (pot.sku, quantity)])

    assert stock_of(mug, pot) == [5, 5]
    assert_nothing_recorded()


@pytest.mark.parametrize("card_number", ["4242 4242 4242 4241", "1234", "not a card"])
def test_a_bad_card_number_is_refused_before_anything_is_reserved(card_number):
    mug = make_product(stock=5)

    with pytest.raises(InvalidCard):
        place([(mug.sku, 1)], card_number=card_number)

    assert stock_of(mug) == [5]
    assert_nothing_recorded()


def test_place_order_creates_the_four_fulfilment_steps_in_order_with_distinct_task_ids():
    order = place([(make_product().sku, 1)])

    steps = list(WorkflowStep.objects.filter(order=order).order_by("position"))

    assert [step.name for step in steps] == WORKFLOW_STEPS
    assert [step.position for step in steps] == list(range(len(WORKFLOW_STEPS)))
    task_ids = [step.task_id for step in steps]
    assert all(task_ids)
    assert len(set(task_ids)) == len(WORKFLOW_STEPS)
    assert {(step.state, step.error, step.finished_at) for step in steps} == {(WorkflowStep.State.PENDING, "", None)}


def test_place_order_records_the_charge_as_queued_and_the_rest_of_the_workflow_as_waiting():
    order = place([(make_product().sku, 1)])

    records = {r.task_name.rpartition(".")[2]: r for r in TaskRecord.objects.about(order)}

    assert sorted(records) == sorted(WORKFLOW_TASKS)
    assert {name: r.state for name, r in records.items()} == {
        name: states.PENDING if name == "charge_payment" else PLANNED for name in WORKFLOW_TASKS
    }
    # The steps' records are the runs their WorkflowStep rows name.
    assert {step.name: step.task_id for step in order.steps.all()} == {
        name: records[name].task_id for name in WORKFLOW_STEPS
    }
    assert {r.root_id for r in records.values()} == {records["charge_payment"].task_id}


def test_place_order_writes_the_workflows_chord_counter_with_the_order():
    # Written by the checkout's transaction, keyed by the callback's task id: the charge's worker,
    # which sends the chord, writes nothing for it (one commit fewer per order).
    order = place([(make_product().sku, 1)])

    steps = dict(order.steps.values_list("name", "task_id"))
    counter = ChordCounter.objects.get(group_id=steps["confirm_order"])
    assert counter.count == 2
    assert header_task_ids(counter) == [steps["create_shipment"], steps["record_sales"]]


def test_place_order_tells_the_customer_nothing_yet():
    # Messages follow the outcome: nothing is queued until the order is confirmed or stopped.
    order = place([(make_product().sku, 1)])

    assert not Notification.objects.filter(order=order).exists()


def test_task_ids_are_not_shared_between_orders():
    mug = make_product(stock=5)
    first, second = place([(mug.sku, 1)]), place([(mug.sku, 1)])

    first_ids = set(first.steps.values_list("task_id", flat=True))
    second_ids = set(second.steps.values_list("task_id", flat=True))

    assert first_ids.isdisjoint(second_ids)


def test_place_order_sends_the_workflow_once_after_commit(django_capture_on_commit_callbacks):
    mug = make_product(stock=5)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        place([(mug.sku, 1)])

    assert len(callbacks) == 1


def test_sending_the_workflow_writes_nothing_more_to_the_task_history(monkeypatch, django_capture_on_commit_callbacks):
    # The checkout's transaction recorded the charge as queued: its publish has nothing to add
    # (it used to send an UPDATE that could match no row, one more statement per checkout).
    with current_app.connection_for_write("memory://") as broker:
        monkeypatch.setattr(workflow, "publish", lambda order, canvas: canvas.apply_async(connection=broker))
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            order = place([(make_product().sku, 1)])
        with CaptureQueriesContext(connection) as queries:
            callbacks[0]()

    assert [query["sql"] for query in queries.captured_queries] == []
    assert TaskRecord.objects.about(order).get(task_name="orders.tasks.charge_payment").state == states.PENDING


def test_the_database_refuses_negative_stock():
    mug = make_product(stock=3)

    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.filter(pk=mug.pk).update(stock=F("stock") - 4)

    assert stock_of(mug) == [3]


def test_an_order_too_large_for_the_books_is_refused_and_nothing_is_reserved():
    products = [make_product(price="99999999.99", stock=200) for _ in range(2)]

    with pytest.raises(CheckoutError, match="too large"):
        place([(products[0].sku, 100), (products[1].sku, 100)])

    assert stock_of(*products) == [200, 200]
    assert_nothing_recorded()


def test_a_workflow_the_broker_could_not_take_leaves_no_task_in_the_history(
    monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(workflow, "publish", lambda order, canvas: False)  # the broker is down
    mug = make_product(stock=5)

    with django_capture_on_commit_callbacks(execute=True):
        order = place([(mug.sku, 1)])

    # The order is kept (the recovery job sends its workflow later) and its stock reserved...
    assert Order.objects.get(pk=order.pk).status == Order.Status.PENDING
    assert stock_of(mug) == [4]
    # ...but nothing of a workflow that was never sent shows in the task console.
    assert list(TaskRecord.objects.about(order).values_list("task_name", "state")) == []
    assert not ChordCounter.objects.exists()
