"""Test data builders."""

import itertools
from decimal import Decimal

from orders import lifecycle
from orders.models import Order
from shop.models import Category, Product

_sequence = itertools.count(1)

GOOD_CARD = "4242 4242 4242 4242"
DECLINED_CARD = "4000 0000 0000 0002"


def make_category(name: str = "") -> Category:
    n = next(_sequence)
    name = name or f"Category {n}"
    return Category.objects.create(name=name, slug=f"category-{n}")


def make_product(*, stock: int = 10, price: str = "12.50", name: str = "", category: Category | None = None) -> Product:
    n = next(_sequence)
    return Product.objects.create(
        category=category or make_category(),
        name=name or f"Product {n}",
        slug=f"product-{n}",
        sku=f"SKU-{n:05d}",
        price=Decimal(price),
        stock=stock,
    )


def customer_payload(n: int | None = None) -> dict:
    n = n if n is not None else next(_sequence)
    return {"name": f"Customer {n}", "email": f"customer{n}@example.com", "phone": f"+4479460{n:05d}"}


def order_payload(*items: tuple[Product, int], card_number: str = GOOD_CARD, customer: dict | None = None) -> dict:
    return {
        "customer": customer or customer_payload(),
        "shipping_address": "1 Test Street\nLondon",
        "items": [{"sku": product.sku, "quantity": quantity} for product, quantity in items],
        "card_number": card_number,
    }


# The legal way to each order status (orders/lifecycle.py): the database refuses any other
# change of Order.status, so a test reaches a status the way an order does.
_PAID = [lifecycle.START_CHARGE, lifecycle.CAPTURE]
PATHS = {
    Order.Status.PENDING: [],
    Order.Status.PROCESSING: [lifecycle.START_CHARGE],
    Order.Status.PAID: _PAID,
    Order.Status.CONFIRMED: [*_PAID, lifecycle.CONFIRM],
    Order.Status.ON_HOLD: [*_PAID, lifecycle.HOLD],
    Order.Status.CANCELLING: [lifecycle.REQUEST_CANCEL],
    Order.Status.CANCELLED: [lifecycle.CANCEL],
    Order.Status.FAILED: [lifecycle.FAIL_PAYMENT],
}


def reach(order: Order, status: str) -> Order:
    """Move a pending order to `status` through its state machine, status only (no stock,
    payment or message effects: the services have those); return it refreshed."""
    for transition in PATHS[status]:
        assert lifecycle.move(order, transition), f"{order} could not {transition}"
    order.refresh_from_db()
    assert order.status == status
    return order
