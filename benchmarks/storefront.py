"""Storefront pages with a large catalog: the product list (plain, by category, searched) and a
product page through gunicorn, with 10,000 products next to the same pages with the demo
catalog's 50; and the SQL each page sends, which must not grow with the products shown."""

import io
import time
import urllib.request
from collections.abc import Callable
from decimal import Decimal

from django.core.management import call_command
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from shop.models import Category, Product

from .database import BenchmarkError
from .stack import Stack
from .stats import percentiles

CATEGORIES = 5


def _catalog(products: int) -> None:
    """`products` active products over CATEGORIES categories (the demo catalog's names first)."""
    call_command("load_demo_catalog", stdout=io.StringIO())
    categories = list(Category.objects.order_by("pk")[:CATEGORIES])
    have = Product.objects.count()
    Product.objects.bulk_create(
        (
            Product(
                category=categories[n % len(categories)],
                name=f"Catalog item {n:05d}",
                slug=f"catalog-item-{n:05d}",
                sku=f"CAT-{n:05d}",
                description="A product of the benchmark's large catalog.",
                price=Decimal("1.00") + n % 97,
                stock=10 + n % 50,
            )
            for n in range(have, products)
        ),
        batch_size=2000,
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"VACUUM ANALYZE {Product._meta.db_table}")


def _pages() -> dict[str, str]:
    product = Product.objects.order_by("pk").first()
    category = Category.objects.order_by("pk").first()
    return {
        "product list": "/",
        "product list, page 40": "/?page=40",
        "category": f"/?category={category.slug}",
        "search": "/?q=kettle",
        "product page": product.get_absolute_url(),
    }


def _p95(url: str, requests: int) -> float:
    samples = []
    for _ in range(3):  # warm-up
        urllib.request.urlopen(url, timeout=30).read()
    for _ in range(requests):
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as response:
            if response.status != 200:
                raise BenchmarkError(f"{url} answered {response.status}")
            response.read()
        samples.append(time.perf_counter() - start)
    return percentiles(samples)["p95"]


def queries_per_page(pages: dict[str, str]) -> dict[str, int]:
    """SQL statements each page sends, rendered in this process."""
    counts = {}
    with override_settings(DEBUG=False, ALLOWED_HOSTS=["testserver"], SECURE_SSL_REDIRECT=False):
        client = Client()
        for label, path in pages.items():
            client.get(path)  # a first request warms the session and template caches
            with CaptureQueriesContext(connection) as queries:
                if client.get(path).status_code != 200:
                    raise BenchmarkError(f"{path} did not answer 200")
            counts[label] = len(queries)
    return counts


def measure(stack: Stack, products: int, requests: int, log: Callable[[str], None]) -> dict:
    """{page: {"p95": seconds with `products`, "baseline": seconds with 50, "queries": (50, products)}}."""
    results: dict[str, dict] = {}
    for size in (50, products):
        _catalog(size)
        pages = _pages()
        url = stack.web(workers=2, threads=1)  # the Procfile's gunicorn
        log(f"  {size:,} products: {len(pages)} pages × {requests} requests ...")
        queries = queries_per_page(pages)
        for label, path in pages.items():
            entry = results.setdefault(label, {"queries": {}})
            entry["p95" if size == products else "baseline"] = _p95(url + path, requests)
            entry["queries"][size] = queries[label]
        stack.stop(stack.processes[-1])
    return results
