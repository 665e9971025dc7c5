"""The shopping cart, kept in the session as {sku: quantity}. Prices always come from the database."""

from dataclasses import dataclass
from decimal import Decimal

from django.contrib.sessions.backends.base import SessionBase

from .models import Product

MAX_LINE_QUANTITY = 100


class CartError(ValueError):
    """The cart cannot change as asked; the message is meant for the customer."""


@dataclass(frozen=True)
class CartLine:
    product: Product
    quantity: int

    @property
    def total(self) -> Decimal:
        return self.product.price * self.quantity

    @property
    def problem(self) -> str:
        if not self.product.active:
            return "No longer available."
        if self.quantity > self.product.stock:
            return f"Only {self.product.stock} left."
        return ""


class Cart:
    SESSION_KEY = "cart"

    def __init__(self, session: SessionBase) -> None:
        self.session = session
        stored = session.get(self.SESSION_KEY)
        self._items: dict[str, int] = dict(stored) if isinstance(stored, dict) else {}

    def add(self, product: Product, quantity: int) -> None:
        self.set(product, self._items.get(product.sku, 0) + quantity)

    def set(self, product: Product, quantity: int) -> None:
        if quantity < 1:
            raise CartError("Quantity must be at least 1.")
        if not product.active:
            raise CartError(f"{product.name} is no longer available.")
        if quantity > min(product.stock, MAX_LINE_QUANTITY):
            if product.stock == 0:
                raise CartError(f"{product.name} is out of stock.")
            limit = min(product.stock, MAX_LINE_QUANTITY)
            raise CartError(f"You can have at most {limit} of {product.name} in your cart.")
        self._items[product.sku] = quantity
        self._save()

    def remove(self, sku: str) -> None:
        if self._items.pop(sku, None) is not None:
            self._save()

    def clear(self) -> None:
        self._items = {}
        self._save()

    def items(self) -> list[tuple[str, int]]:
        return list(self._items.items())

    @property
    def count(self) -> int:
        return sum(self._items.values())

    def lines(self) -> list[CartLine]:
        """The cart's lines with current products; lines whose product is gone are dropped."""
        products = Product.objects.filter(sku__in=self._items).select_related("category")
        by_sku = {product.sku: product for product in products}
        if stale := self._items.keys() - by_sku.keys():
            for sku in stale:
                del self._items[sku]
            self._save()
        return [CartLine(by_sku[sku], quantity) for sku, quantity in self._items.items()]

    def _save(self) -> None:
        self.session[self.SESSION_KEY] = self._items
        self.session.modified = True
