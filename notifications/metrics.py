"""The notifications app's series for /metrics, read from the database at scrape time;
registered by NotificationsConfig.ready(). Proven by tests/functional/test_metrics.py."""

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from tasks_admin.rowcounts import RowCounts

from .models import Notification

BY_STATUS = RowCounts(Notification, group=("channel",))


class NotificationCollector:
    def collect(self) -> Iterator[Metric]:
        counts = BY_STATUS.counts()
        family = GaugeMetricFamily("shop_notifications", "Messages by channel and status", labels=["channel", "status"])
        for channel in Notification.Channel.values:
            for status in Notification.Status.values:
                family.add_metric([channel, status], counts.get((channel, status), 0))
        yield family
