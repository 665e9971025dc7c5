"""Many customers racing for the last units: exactly the units in stock are sold."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from orders.checkout import Customer, place_order
from orders.errors import InsufficientStock
from orders.models import Order
from shop.models import Product
from tests.factories import GOOD_CARD, make_product
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

UNITS = 5
BUYERS = 24


def test_concurrent_checkouts_sell_exactly_the_units_in_stock(worker):
    product = make_product(stock=UNITS)
    start = threading.Barrier(BUYERS)

    def buy(n: int) -> str | None:
        start.wait()  # every buyer checks out at the same moment
        try:
            order = place_order(
                customer=Customer(name=f"Buyer {n}", email=f"buyer{n}@example.com", phone=f"+4479460{n:05d}"),
                shipping_address="1 Race Street",
                items=[(product.sku, 1)],
                card_number=GOOD_CARD,
            )
            return str(order.pk)
        except InsufficientStock:
            return None
        finally:
            connections.close_all()

    with ThreadPoolExecutor(BUYERS) as pool:
        outcomes = list(pool.map(buy, range(BUYERS)))

    placed = [order_id for order_id in outcomes if order_id]
    assert len(placed) == UNITS
    assert outcomes.count(None) == BUYERS - UNITS
    assert Product.objects.get(pk=product.pk).stock == 0
    assert Order.objects.count() == UNITS

    def all_confirmed() -> bool:
        return Order.objects.filter(pk__in=placed, status=Order.Status.CONFIRMED).count() == UNITS

    wait_for(all_confirmed, timeout=60, message="every placed order confirmed")
    product.refresh_from_db()
    assert (product.stock, product.units_sold) == (0, UNITS)
