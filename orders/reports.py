"""The daily sales report: a day's confirmed orders, added up chunk by chunk.

orders.tasks.build_daily_sales_report sends a chord: summarize_sales_chunk for each
chunk of order ids (in parallel, on any worker), then store_sales_report with their
partial results. Partials are plain JSON (revenue as a decimal string), so they go
through the JSON-only result backend exactly.
"""

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from shop.models import Product

from .models import Order, OrderLine, SalesReport

CHUNK_SIZE = 500
TOP_PRODUCTS = 10


def report_day(day: str = "") -> date:
    """The ISO day asked for, or yesterday (UTC)."""
    if day:
        return date.fromisoformat(day)
    return timezone.now().astimezone(UTC).date() - timedelta(days=1)


def order_id_chunks(day: date, chunk_size: int = CHUNK_SIZE) -> list[list[str]]:
    """The ids of the orders placed on `day` (UTC) and confirmed, in chunks of `chunk_size`."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    ids = [
        str(pk)
        for pk in Order.objects.filter(
            status=Order.Status.CONFIRMED, created_at__gte=start, created_at__lt=start + timedelta(days=1)
        )
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)
    ]
    return [ids[i : i + chunk_size] for i in range(0, len(ids), chunk_size)]


def summarize_orders(order_ids: list[str]) -> dict:
    """A chunk's partial result: orders, units, revenue (a decimal string) and units by SKU.

    Counts only orders still confirmed, should one have changed since the chunks were made.
    """
    orders = Order.objects.filter(pk__in=order_ids, status=Order.Status.CONFIRMED)
    totals = list(orders.values_list("total", flat=True))
    units_by_sku = dict(
        OrderLine.objects.filter(order__in=orders)
        .values("sku")
        .annotate(units=Sum("quantity"))
        .values_list("sku", "units")
    )
    return {
        "orders": len(totals),
        "units": sum(units_by_sku.values()),
        "revenue": str(sum(totals, Decimal("0.00"))),
        "units_by_sku": units_by_sku,
    }


def store_report(day: str, partials: list[dict], *, task_id: str = "") -> SalesReport:
    """Add up the chunks' partial results into the day's report, replacing any earlier one."""
    units_by_sku = Counter()
    for partial in partials:
        units_by_sku.update(partial["units_by_sku"])
    top = sorted(units_by_sku.items(), key=lambda item: (-item[1], item[0]))[:TOP_PRODUCTS]
    names = dict(Product.objects.filter(sku__in=[sku for sku, _ in top]).values_list("sku", "name"))
    report, _ = SalesReport.objects.update_or_create(
        day=date.fromisoformat(day),
        defaults={
            "orders": sum(partial["orders"] for partial in partials),
            "units": sum(partial["units"] for partial in partials),
            "revenue": sum((Decimal(partial["revenue"]) for partial in partials), Decimal("0.00")),
            "top_products": [{"sku": sku, "name": names.get(sku, ""), "units": units} for sku, units in top],
            "generated_at": timezone.now(),
            "task_id": task_id,
        },
    )
    return report
