"""The daily sales report's parts: which orders, each chunk's partial result, the stored report."""

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from orders import reports
from orders.checkout import Customer, place_order
from orders.models import Order, SalesReport
from shop.models import Product
from tests.factories import GOOD_CARD, make_product, reach

pytestmark = pytest.mark.django_db

DAY = date(2026, 3, 14)


def order(*items: tuple[Product, int], at: datetime, status: str = Order.Status.CONFIRMED) -> Order:
    placed = place_order(
        customer=Customer(name="Ada", email="ada@example.com", phone="+442079460000"),
        shipping_address="London",
        items=[(product.sku, quantity) for product, quantity in items],
        card_number=GOOD_CARD,
    )
    reach(placed, status)  # through the order's state machine: the database refuses a jump
    Order.objects.filter(pk=placed.pk).update(created_at=at)
    return placed


def at(hour: int, minute: int = 0, second: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC)


def test_the_default_day_is_yesterday_in_utc():
    assert reports.report_day("") == timezone.now().date() - timedelta(days=1)
    assert reports.report_day("2026-03-14") == DAY


def test_chunks_hold_the_confirmed_orders_placed_that_utc_day():
    product = make_product(stock=100)
    inside = [order((product, 1), at=at(h)) for h in (0, 6, 12, 18)] + [order((product, 1), at=at(23, 59, 59))]
    order((product, 1), at=at(12), status=Order.Status.CANCELLED)
    order((product, 1), at=at(12), status=Order.Status.PROCESSING)
    order((product, 1), at=at(12), status=Order.Status.PAID)
    order((product, 1), at=at(12), status=Order.Status.ON_HOLD)
    order((product, 1), at=at(23, 59, 59, day=DAY - timedelta(days=1)))
    order((product, 1), at=at(0, day=DAY + timedelta(days=1)))

    chunks = reports.order_id_chunks(DAY, chunk_size=2)

    assert [len(chunk) for chunk in chunks] == [2, 2, 1]
    assert [i for chunk in chunks for i in chunk] == [str(o.pk) for o in inside]  # in the order placed


def test_a_chunk_adds_up_its_confirmed_orders_as_json():
    kettle = make_product(stock=50, price="20.00")
    mug = make_product(stock=50, price="4.50")
    first = order((kettle, 1), (mug, 2), at=at(9))
    second = order((mug, 3), at=at(10))
    held = order((kettle, 5), at=at(11), status=Order.Status.ON_HOLD)  # paid, but not confirmed
    cancelled = order((kettle, 5), at=at(11), status=Order.Status.CANCELLED)

    partial = reports.summarize_orders([str(o.pk) for o in (first, second, held, cancelled)])

    assert partial == {"orders": 2, "units": 6, "revenue": "42.50", "units_by_sku": {kettle.sku: 1, mug.sku: 5}}
    assert json.loads(json.dumps(partial)) == partial


def test_the_report_adds_up_the_chunks_and_running_it_again_replaces_it():
    kettle = make_product(name="Kettle")
    mug = make_product(name="Mug")
    partials = [
        {"orders": 2, "units": 6, "revenue": "42.50", "units_by_sku": {kettle.sku: 1, mug.sku: 5}},
        {"orders": 1, "units": 4, "revenue": "80.10", "units_by_sku": {kettle.sku: 4}},
    ]

    report = reports.store_report(DAY.isoformat(), partials, task_id="t-1")

    assert (report.day, report.orders, report.units, report.revenue) == (DAY, 3, 10, Decimal("122.60"))
    assert report.top_products == [
        {"sku": kettle.sku, "name": "Kettle", "units": 5},
        {"sku": mug.sku, "name": "Mug", "units": 5},  # a tie: by SKU
    ]
    assert report.task_id == "t-1"

    again = reports.store_report(DAY.isoformat(), partials[:1], task_id="t-2")

    assert SalesReport.objects.get() == again
    assert (again.orders, again.revenue, again.task_id) == (2, Decimal("42.50"), "t-2")
    assert again.generated_at >= report.generated_at


def test_a_day_without_orders_has_a_report_of_zeros():
    assert reports.order_id_chunks(DAY) == []

    report = reports.store_report(DAY.isoformat(), [])

    assert (report.orders, report.units, report.revenue, report.top_products) == (0, 0, Decimal("0.00"), [])


def test_only_the_top_ten_products_are_kept():
    units = {f"SKU-{n:02d}": n for n in range(1, 13)}

    report = reports.store_report(DAY.isoformat(), [{"orders": 1, "units": 78, "revenue": "1", "units_by_sku": units}])

    assert [p["units"] for p in report.top_products] == list(range(12, 2, -1))
