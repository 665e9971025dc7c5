"""Placing an order: reserve stock, record the order and start its workflow, all or nothing."""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction

from shop.cart import MAX_LINE_QUANTITY
from shop.models import Product

from . import stock, workflow
from .errors import CheckoutError, UnknownProduct
from .models import Order, OrderLine, Payment
from .payments import get_gateway

MAX_TOTAL = Decimal(10) ** (Order._meta.get_field("total").max_digits - Order._meta.get_field("total").decimal_places)


@dataclass(frozen=True)
class Customer:
    name: str
    email: str
    phone: str


def place_order(
    *, customer: Customer, shipping_address: str, items: Iterable[tuple[str, int]], card_number: str
) -> Order:
    """Place an order for (sku, quantity) items at the catalog's current prices.

    Stock is reserved by conditional UPDATEs in the same transaction that creates the
    order, so concurrent checkouts can never sell more than there is; the workflow is
    sent only after that transaction commits.
    """
    quantities = Counter()
    for sku, quantity in items:
        if quantity <= 0:
            raise CheckoutError(f"Quantity for {sku} must be at least 1.")
        quantities[sku] += quantity
    if not quantities:
        raise CheckoutError("Your cart is empty.")
    for sku, quantity in quantities.items():
        if quantity > MAX_LINE_QUANTITY:
            raise CheckoutError(f"At most {MAX_LINE_QUANTITY} of {sku} per order; you asked for {quantity}.")
    card = get_gateway().tokenize(card_number)

    with transaction.atomic():
        products = Product.objects.filter(sku__in=quantities, active=True).order_by("pk")
        by_sku = {product.sku: product for product in products}
        if missing := quantities.keys() - by_sku.keys():
            raise UnknownProduct(missing)
        stock.reserve({product: quantities[product.sku] for product in by_sku.values()})

        total = sum((p.price * quantities[p.sku] for p in by_sku.values()), Decimal("0.00"))
        if total >= MAX_TOTAL:
            raise CheckoutError("This order is too large to place online; please contact us.")
        order = Order.objects.create(
            customer_name=customer.name,
            email=customer.email,
            phone=customer.phone,
            shipping_address=shipping_address,
            total=total,
        )
        OrderLine.objects.bulk_create(
            OrderLine(order=order, product=p, sku=p.sku, name=p.name, unit_price=p.price, quantity=quantities[p.sku])
            for p in by_sku.values()
        )
        Payment.objects.create(
            order=order,
            amount=total,
            card_token=card.token,
            card_last4=card.last4,
            idempotency_key=f"order:{order.pk}:charge",
        )
        workflow.start(order)
    return order
