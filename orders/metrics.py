"""The orders app's series for /metrics, read from the database at scrape time; registered
with the task layer's extension point in orders/console.py. Proven by
tests/functional/test_metrics.py and tests/integration/test_prometheus_scrape.py."""

from collections.abc import Iterator

from django.conf import settings
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from tasks_admin.rowcounts import RowCounts

from . import tally, workflow
from .models import Order, WorkflowStep
from .selectors import stuck_orders

SETTLED = [state for state in WorkflowStep.State.values if state != WorkflowStep.State.PENDING]
BY_STATUS = RowCounts(Order)


class OrderCollector:
    """Orders by status, orders placed, the workflow's steps by outcome, and stuck orders."""

    def collect(self) -> Iterator[Metric]:
        counts = {status: n for (status,), n in BY_STATUS.counts().items()}
        by_status = GaugeMetricFamily("shop_orders", "Orders by status", labels=["status"])
        for status in Order.Status.values:
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status
        yield CounterMetricFamily("shop_orders_placed", "Orders placed", value=sum(counts.values()))
        steps = CounterMetricFamily(
            "shop_order_steps",
            "Workflow steps settled, by step and outcome (confirm_order SUCCESS: orders confirmed); a step"
            " settled again (a failure that succeeded once continued) counts again",
            labels=["step", "state"],
        )
        settled = tally.counts()
        # Every step and outcome, zero included: increase() sees the first order confirmed.
        for name in workflow.STEPS:
            for state in SETTLED:
                steps.add_metric([name, state], settled.get((name, state), 0))
        yield steps
        yield GaugeMetricFamily(
            "shop_orders_stuck",
            "Active orders whose workflow has not moved for STUCK_WORKFLOW_MINUTES",
            value=stuck_orders(settings.STUCK_WORKFLOW_MINUTES).count(),
        )
