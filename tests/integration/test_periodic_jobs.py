"""The periodic jobs, each sent to the broker and run by `celery -A shop worker`."""

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from unittest import mock

import pytest
from celery import states
from django.utils import timezone
from django_celery_results.models import ChordCounter, TaskResult

from notifications.models import Notification
from orders import lifecycle, tasks
from orders.checkout import Customer, place_order
from orders.models import Order, SalesReport
from shop import tasks as shop_tasks
from shop.models import Product
from tasks_admin import tasks as console_tasks
from tasks_admin.models import TaskRecord
from tests.factories import GOOD_CARD, make_product
from tests.support import WORKFLOW_STEPS, mailbox, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

DAY = date(2026, 2, 3)


def place_during_broker_outage(*items: tuple[Product, int], email: str = "late@example.com") -> Order:
    """An order whose workflow could not be sent at checkout: it stays pending."""
    with mock.patch("orders.workflow.publish", return_value=False):
        return place_order(
            customer=Customer(name="Late Customer", email=email, phone="+442079461234"),
            shipping_address="1 Slow Lane",
            items=[(product.sku, quantity) for product, quantity in items],
            card_number=GOOD_CARD,
        )


def backdate(order: Order, **delta) -> None:
    """As if the order had been placed (and last changed) that long ago."""
    at = timezone.now() - timedelta(**delta)
    Order.objects.filter(pk=order.pk).update(created_at=at, updated_at=at)


def reload(order: Order) -> Order:
    return Order.objects.get(pk=order.pk)


def test_a_stale_unpaid_order_is_cancelled_its_stock_released_and_the_customer_emailed_once(worker, mail_dir):
    product = make_product(stock=5)
    stale = place_during_broker_outage((product, 2), email="stale@example.com")
    recent = place_during_broker_outage((product, 1), email="recent@example.com")
    backdate(stale, minutes=61)
    backdate(recent, minutes=30)

    assert tasks.cancel_stale_orders.delay().get(timeout=30) == {"cancelled": 1}

    stale = reload(stale)
    assert (stale.status, stale.failure_reason) == (Order.Status.CANCELLED, "it was not paid within 60 minutes.")
    assert reload(recent).status == Order.Status.PENDING
    assert Product.objects.get(pk=product.pk).stock == 4  # 2 back on sale, 1 still reserved
    [message] = wait_for(lambda: mailbox(mail_dir, to="stale@example.com"), message="the customer told")
    assert message["Subject"] == f"Your order {stale.number} was cancelled"

    # The next run (or a redelivery) changes nothing and sends nothing more.
    assert tasks.cancel_stale_orders.delay().get(timeout=30) == {"cancelled": 0}
    wait_for(lambda: not Notification.objects.filter(status="pending").exists(), message="nothing left to send")
    assert len(mailbox(mail_dir, to="stale@example.com")) == 1
    assert Product.objects.get(pk=product.pk).stock == 4
    assert mailbox(mail_dir, to="recent@example.com") == []


def test_a_stuck_order_is_sent_again_and_confirmed(worker, mail_dir):
    product = make_product(stock=3)
    order = place_during_broker_outage((product, 1), email="stuck@example.com")
    backdate(order, minutes=11)
    assert reload(order).status == Order.Status.PENDING

    assert tasks.recover_stuck_workflows.delay().get(timeout=30) == {order.number: WORKFLOW_STEPS}

    wait_for(lambda: reload(order).status == Order.Status.CONFIRMED, message="the recovered order confirmed")
    wait_for(lambda: set(order.steps.values_list("state", flat=True)) == {states.SUCCESS}, message="steps recorded")
    assert Product.objects.get(pk=product.pk).units_sold == 1
    wait_for(lambda: mailbox(mail_dir, to="stuck@example.com"), message="the confirmation e-mail")
    # Confirmed: nothing is stuck any more.
    assert tasks.recover_stuck_workflows.delay().get(timeout=30) == {}


def confirmed_on(day: date, *items: tuple[Product, int], hour: int, confirmed: bool = True) -> Order:
    """An order placed at `hour` on `day`, taken through its state machine to confirmed (or cancelled)."""
    order = place_during_broker_outage(*items)
    path = (lifecycle.START_CHARGE, lifecycle.CAPTURE, lifecycle.CONFIRM) if confirmed else (lifecycle.CANCEL,)
    for transition in path:
        assert lifecycle.move(order, transition)
    Order.objects.filter(pk=order.pk).update(created_at=datetime(day.year, day.month, day.day, hour, tzinfo=UTC))
    return order


def test_the_daily_sales_report_is_a_chord_over_chunks_and_running_it_again_replaces_it(worker):
    kettle = make_product(stock=100, price="20.00", name="Kettle")
    mug = make_product(stock=100, price="4.50", name="Mug")
    orders = [confirmed_on(DAY, (kettle, 1), (mug, 2), hour=h) for h in (1, 5, 9, 13)]  # 29.00 each
    orders.append(confirmed_on(DAY, (mug, 4), hour=23))  # 18.00
    confirmed_on(DAY, (kettle, 9), hour=12, confirmed=False)
    confirmed_on(DAY + timedelta(days=1), (kettle, 9), hour=0)

    assert tasks.build_daily_sales_report.delay(DAY.isoformat(), chunk_size=2).get(timeout=30) == DAY.isoformat()

    report = wait_for(lambda: SalesReport.objects.filter(day=DAY).first(), message="the sales report")
    assert (report.orders, report.units, report.revenue) == (5, 16, Decimal("134.00"))
    assert report.top_products == [
        {"sku": mug.sku, "name": "Mug", "units": 12},
        {"sku": kettle.sku, "name": "Kettle", "units": 4},
    ]
    chunks = TaskRecord.objects.filter(task_name="orders.tasks.summarize_sales_chunk")
    assert chunks.count() == 3  # 5 orders, 2 per chunk
    assert set(chunks.values_list("chord_id", flat=True)) == {report.task_id}
    assert TaskRecord.objects.get(task_id=report.task_id).task_name == "orders.tasks.store_sales_report"

    confirmed_on(DAY, (kettle, 1), hour=22)  # a late confirmation: the report run again counts it
    tasks.build_daily_sales_report.delay(DAY.isoformat(), chunk_size=2).get(timeout=30)

    wait_for(lambda: SalesReport.objects.get(day=DAY).task_id != report.task_id, message="the report replaced")
    replaced = SalesReport.objects.get()
    assert (replaced.orders, replaced.units, replaced.revenue) == (6, 17, Decimal("154.00"))


def test_a_day_without_orders_gets_an_empty_report(worker):
    tasks.build_daily_sales_report.delay(DAY.isoformat()).get(timeout=30)

    report = wait_for(lambda: SalesReport.objects.filter(day=DAY).first(), message="the empty report")
    assert (report.orders, report.units, report.revenue, report.top_products) == (0, 0, Decimal("0.00"), [])


def test_the_low_stock_alert_is_sent_once_per_set_of_products(worker, mail_dir):
    low = make_product(stock=2)
    make_product(stock=50)

    def alerts() -> list[str]:
        """The alerts' text parts that list this test's product."""
        texts = [
            m.get_payload()[0].get_payload(decode=True).decode() for m in mailbox(mail_dir, to="staff@example.com")
        ]
        return [text for text in texts if low.sku in text]

    assert shop_tasks.send_low_stock_alert.delay().get(timeout=30) == 1
    assert shop_tasks.send_low_stock_alert.delay().get(timeout=30) == 1
    assert len(alerts()) == 1

    another = make_product(stock=0)
    assert shop_tasks.send_low_stock_alert.delay().get(timeout=30) == 2
    assert len(alerts()) == 2
    assert another.sku in alerts()[-1]


def test_cleanup_deletes_old_history_in_batches_and_keeps_dead_letters_recent_rows_and_live_chords(worker):
    long_ago = timezone.now() - timedelta(days=8)

    def record(state: str = states.SUCCESS, *, finished=long_ago) -> TaskRecord:
        return TaskRecord.objects.create(
            task_id=str(uuid.uuid4()), task_name="x", state=state, sent_at=long_ago, finished_at=finished
        )

    old_results = [TaskResult.objects.create(task_id=str(uuid.uuid4()), status=states.SUCCESS) for _ in range(5)]
    TaskResult.objects.filter(pk__in=[r.pk for r in old_results]).update(date_done=long_ago)
    recent_result = TaskResult.objects.create(task_id=str(uuid.uuid4()), status=states.SUCCESS)
    for _ in range(5):
        record()
    dead_letter = record(states.FAILURE)
    recent = record(finished=timezone.now())
    queued = record(states.PENDING, finished=None)
    orphan = ChordCounter.objects.create(group_id="orphan", sub_tasks=f'[[["{uuid.uuid4()}", null], null]]', count=1)
    live = ChordCounter.objects.create(group_id="live", sub_tasks=f'[[["{queued.task_id}", null], null]]', count=1)

    deleted = console_tasks.cleanup_task_history.delay(batch_size=2).get(timeout=30)

    assert (deleted["task_results"], deleted["task_records"]) == (5, 5)
    assert deleted["chord_counters"] >= 1  # an earlier test's workflow may have left one too
    assert not TaskResult.objects.filter(pk__in=[r.pk for r in old_results]).exists()
    assert TaskResult.objects.filter(pk=recent_result.pk).exists()
    assert set(TaskRecord.objects.filter(sent_at=long_ago)) == {dead_letter, recent, queued}
    assert not ChordCounter.objects.filter(pk=orphan.pk).exists()
    assert ChordCounter.objects.filter(pk=live.pk).exists()
