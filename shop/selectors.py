"""Catalog queries shared by the storefront pages and the JSON API."""

from django.db.models import Q, QuerySet

from .models import Category, Product


def search_text(raw: str | None, limit: int = 100) -> str:
    """A search term from a query string: trimmed, bounded, and without NUL (PostgreSQL rejects it)."""
    return (raw or "").replace("\x00", "").strip()[:limit]


def product_listing(*, query: str = "", category: Category | None = None) -> QuerySet[Product]:
    products = Product.objects.filter(active=True).select_related("category")
    if category is not None:
        products = products.filter(category=category)
    if query:
        products = products.filter(Q(name__icontains=query) | Q(sku__iexact=query))
    return products.order_by("name", "id")
