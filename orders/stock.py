"""The only code that moves units in and out of Product.stock.

Reservations are conditional UPDATEs (`stock >= n`), taken in primary-key order so
concurrent transactions lock rows in the same order and never deadlock; the CHECK
constraint on Product.stock is the last line against overselling.
"""

from django.db.models import F, OuterRef, Subquery
from django.utils import timezone

from shop.models import Product

from .errors import InsufficientStock
from .models import Order, OrderLine


def reserve(quantities: dict[Product, int]) -> None:
    """Take the units off sale, all or none (call inside a transaction)."""
    for product in sorted(quantities, key=lambda p: p.pk):
        wanted = quantities[product]
        if not Product.objects.filter(pk=product.pk, stock__gte=wanted).update(stock=F("stock") - wanted):
            available = Product.objects.values_list("stock", flat=True).get(pk=product.pk)
            raise InsufficientStock(product, wanted, available)


def release(order: Order) -> bool:
    """Put an order's reserved units back on sale, once (call inside a transaction)."""
    claimed = Order.objects.filter(pk=order.pk, stock_released_at__isnull=True).update(stock_released_at=timezone.now())
    if claimed:
        add_to_products(order.pk, "stock", +1)
    return bool(claimed)


def reserve_again(order: Order) -> bool:
    """Take a released order's units off sale again, to continue it (call inside a transaction)."""
    if order.stock_released_at is None:
        return False
    lines = OrderLine.objects.filter(order=order).select_related("product")
    reserve({line.product: line.quantity for line in lines})
    Order.objects.filter(pk=order.pk).update(stock_released_at=None)
    order.stock_released_at = None
    return True


def add_to_products(order_id, field: str, sign: int) -> None:
    """Add (+1) or take back (-1) an order's line quantities to a Product column, in one UPDATE
    of all its products (an order has one line per product)."""
    quantity = OrderLine.objects.filter(order_id=order_id, product_id=OuterRef("pk")).values("quantity")[:1]
    products = Product.objects.filter(pk__in=OrderLine.objects.filter(order_id=order_id).values("product_id"))
    products.update(**{field: F(field) + Subquery(quantity) * sign})
