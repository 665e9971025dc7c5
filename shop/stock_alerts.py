"""The low-stock alert: staff hear once a day about each set of products running out."""

import hashlib
import logging
from datetime import date

from django.conf import settings
from django.db.models import QuerySet
from django.template.loader import render_to_string
from django.utils import timezone

from notifications import services as notifications
from tasks_admin.errors import PermanentProviderError

from .models import Product

logger = logging.getLogger(__name__)


def low_stock_products() -> QuerySet[Product]:
    """Active products with LOW_STOCK_THRESHOLD units or fewer left, by SKU."""
    return Product.objects.filter(active=True, stock__lte=settings.LOW_STOCK_THRESHOLD).order_by("sku")


def send_low_stock_alert(today: date | None = None) -> int:
    """E-mail SHOP_STAFF_EMAILS the low-stock products; return how many products were listed.

    The idempotency key holds the day (UTC) and a hash of the SKUs, so the hourly run
    sends again only when the set of products changes or a new day starts.
    """
    products = list(low_stock_products())
    if not products:
        return 0
    day = (today or timezone.now().date()).isoformat()
    skus = hashlib.sha256("\n".join(product.sku for product in products).encode()).hexdigest()[:16]
    context = {"products": products, "threshold": settings.LOW_STOCK_THRESHOLD, "shop_name": settings.SHOP_NAME}
    subject = f"{len(products)} product{'s' if len(products) != 1 else ''} low on stock"
    body = render_to_string("shop/email/low_stock.txt", context)
    html_body = render_to_string("shop/email/low_stock.html", context)
    for recipient in settings.SHOP_STAFF_EMAILS:
        # The recipient hashed too: one key per message, of bounded length.
        to = hashlib.sha256(recipient.lower().encode()).hexdigest()[:12]
        try:
            notifications.send_email(
                key=f"stock:low:{day}:{skus}:{to}", to=recipient, subject=subject, body=body, html_body=html_body
            )
        except PermanentProviderError:
            logger.exception("Could not send the low-stock alert to %s", recipient)
    return len(products)
