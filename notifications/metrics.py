"""The notifications app's series for /metrics, read from the database at scrape time;
registered by NotificationsConfig.ready(). Proven by tests/functional/test_metrics.py."""

from collections.abc import Iterator

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily, Metric

from .models import Notification


class NotificationCollector:
    def collect(self) -> Iterator[Metric]:
        counts = {
            (channel, status): n
            for channel, status, n in Notification.objects.values_list("channel", "status")
            .annotate(n=Count("id"))
            .order_by()
        }
        family = GaugeMetricFamily("shop_notifications", "Messages by channel and status", labels=["channel", "status"])
        for channel in Notification.Channel.values:
            for status in Notification.Status.values:
                family.add_metric([channel, status], counts.get((channel, status), 0))
        yield family
