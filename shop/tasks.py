"""The catalog's periodic jobs (default schedules: shop/schedules.py)."""

from celery import shared_task

from . import stock_alerts


@shared_task
def send_low_stock_alert() -> int:
    """Hourly: staff hear about products running out, once a day per set of products."""
    return stock_alerts.send_low_stock_alert()
