"""The only code that moves units in and out of Product.stock, and counts them in units_sold.

Reservations are conditional UPDATEs (`stock >= n`), taken in primary-key order so
concurrent transactions lock rows in the same order and never deadlock; the CHECK
constraint on Product.stock is the last line against overselling.
"""

from django.db import connection, transaction
from django.db.models import F, OuterRef, Subquery
from django.utils import timezone

from shop.models import Product
from tasks_admin.sql import db_value

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


def count_sales_once(order_id, at, also: tuple[str, list] | None = None) -> bool:
    """Stamp the order's sales as counted at `at` and add its units to its products'
    `units_sold`, once and only while the order is paid; whether this call counted them.

    One statement on PostgreSQL (a data-modifying WITH), two elsewhere: the SQL a workflow
    step sends is what the benchmark's database figure counts. `also` (PostgreSQL only): one
    more WITH clause, and its parameters, for the same statement (the step's settlement,
    orders/services.py); it may use `claimed`, the order if this call counted it.
    """
    claim = Order.objects.filter(pk=order_id, sales_recorded_at__isnull=True, status=Order.Status.PAID)
    if connection.vendor != "postgresql":
        with transaction.atomic():
            claimed = bool(claim.update(sales_recorded_at=at))
            if claimed:
                add_to_products(order_id, "units_sold", +1)
        return claimed
    order, line, product = (m._meta.db_table for m in (Order, OrderLine, Product))
    extra, extra_params = (f", {also[0]}", also[1]) if also else ("", [])
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH claimed AS (UPDATE {order} SET sales_recorded_at = %s WHERE id = %s "
            f"AND sales_recorded_at IS NULL AND status = %s RETURNING id){extra} "
            f"UPDATE {product} SET units_sold = {product}.units_sold + line.quantity "
            f"FROM {line} AS line, claimed WHERE line.order_id = claimed.id AND line.product_id = {product}.id "
            f"RETURNING {product}.id",
            [db_value(Order, "sales_recorded_at", at), db_value(Order, "id", order_id), Order.Status.PAID]
            + extra_params,
        )
        return bool(cursor.fetchall())
