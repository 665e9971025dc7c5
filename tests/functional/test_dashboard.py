"""The task console dashboard, from the task history: throughput charts, per-task health, counts, access."""

import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
from celery import states
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from orders.checkout import Customer, place_order
from orders.models import Order
from shop.celery import app as celery_app
from tasks_admin import charts, metrics
from tasks_admin.models import TaskRecord
from tests.factories import GOOD_CARD, make_product, reach

pytestmark = pytest.mark.django_db

URL = "/admin/tasks/dashboard/"


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    """These tests read the database only; a closed port makes the broker part answer at once
    (tests/integration/test_dashboard_live.py reads a real broker and worker)."""
    monkeypatch.setattr(celery_app.conf, "broker_url", "redis://127.0.0.1:1/0")


def make_records(
    count: int,
    *,
    state: str = states.SUCCESS,
    finished_at: datetime | None,
    task_name: str = "orders.tasks.charge_payment",
    runtimes: Iterable[float | None] | None = None,
    **fields,
) -> list[TaskRecord]:
    runtimes = list(runtimes) if runtimes is not None else [0.5] * count
    sent_at = (finished_at or timezone.now()) - timedelta(seconds=30)
    return TaskRecord.objects.bulk_create(
        TaskRecord(
            task_id=str(uuid.uuid4()),
            task_name=task_name,
            state=state,
            sent_at=sent_at,
            finished_at=finished_at,
            runtime=runtime,
            **fields,
        )
        for runtime in runtimes
    )


class _Bars(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.chart = ""
        self.bars: dict[str, dict[tuple[str, str], dict[str, str]]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "svg":
            self.chart = values.get("id", "")
            self.bars[self.chart] = {}
        elif tag == "rect" and "data-series" in values:
            self.bars[self.chart][values["data-series"], values["data-start"]] = values


def chart_bars(page: str, chart: str) -> dict[tuple[str, str], dict[str, str]]:
    """The chart's bars by (series, bucket start): their data-* attributes and geometry."""
    parser = _Bars()
    parser.feed(page)
    return parser.bars[f"chart-{chart}"]


def metric(page: str, name: str) -> str:
    return re.search(rf'data-metric="{name}"[^>]*>([^<]*)<', page).group(1)


def task_row(page: str, task_name: str) -> list[str]:
    row = re.search(rf'<tr data-task="{re.escape(task_name)}">(.*?)</tr>', page, re.S).group(1)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]


def get_page(client) -> str:
    response = client.get(URL)
    assert response.status_code == 200
    return response.content.decode()


def test_last_hour_chart_counts_succeeded_and_failed_tasks_per_minute(admin_client):
    now = timezone.now()
    five_ago = (now - timedelta(minutes=5)).replace(second=20, microsecond=0)
    thirty_ago = (now - timedelta(minutes=30)).replace(second=0, microsecond=0)
    make_records(3, finished_at=five_ago)
    make_records(1, state=states.FAILURE, finished_at=five_ago)
    make_records(2, finished_at=thirty_ago)
    # Not in the chart: finished too long ago, revoked, still running.
    make_records(4, finished_at=now - timedelta(hours=2))
    make_records(1, state=states.REVOKED, finished_at=five_ago)
    make_records(1, state=states.STARTED, finished_at=None)

    page = get_page(admin_client)

    bars = chart_bars(page, "hour")
    assert len(bars) == 2 * 60
    minute = five_ago.replace(second=0).isoformat()
    succeeded, failed = bars["succeeded", minute], bars["failed", minute]
    assert (succeeded["data-count"], succeeded["data-value"]) == ("3", "3")
    assert (failed["data-count"], failed["data-value"]) == ("1", "1")
    assert bars["succeeded", thirty_ago.isoformat()]["data-count"] == "2"
    assert "3 succeeded" in page  # the bar's <title> tooltip
    # Bar heights are proportional to the values.
    assert float(succeeded["height"]) == pytest.approx(3 * float(failed["height"]), abs=0.05)
    assert float(bars["failed", thirty_ago.isoformat()]["height"]) == 0
    assert sum(int(bar["data-count"]) for (series, _), bar in bars.items() if series == "succeeded") == 5
    assert sum(int(bar["data-count"]) for (series, _), bar in bars.items() if series == "failed") == 1
    assert (metric(page, "hour-succeeded"), metric(page, "hour-failed")) == ("5", "1")


def test_last_day_chart_averages_tasks_per_minute_over_15_minute_buckets(admin_client):
    now = timezone.now()
    three_hours_ago = now - timedelta(hours=3)
    bucket = three_hours_ago.replace(
        minute=three_hours_ago.minute - three_hours_ago.minute % 15, second=0, microsecond=0
    )
    make_records(6, finished_at=bucket + timedelta(minutes=1))
    make_records(3, state=states.FAILURE, finished_at=bucket + timedelta(minutes=14, seconds=59))
    make_records(2, finished_at=now - timedelta(minutes=10))
    make_records(5, finished_at=now - timedelta(hours=25))  # older than a day

    page = get_page(admin_client)

    bars = chart_bars(page, "day")
    assert len(bars) == 2 * 96
    succeeded, failed = bars["succeeded", bucket.isoformat()], bars["failed", bucket.isoformat()]
    assert (succeeded["data-count"], succeeded["data-value"]) == ("6", "0.4")  # 6 tasks / 15 min
    assert (failed["data-count"], failed["data-value"]) == ("3", "0.2")
    assert "0.4 tasks/min succeeded (6 tasks)" in page
    assert sum(int(bar["data-count"]) for bar in bars.values()) == 6 + 3 + 2
    assert (metric(page, "day-succeeded"), metric(page, "day-failed")) == ("8", "3")
    assert "tasks/min (average over 15 min)" in page


def test_per_task_runs_failure_rate_and_runtime_percentiles_over_the_last_day(admin_client):
    now = timezone.now()
    charge = "orders.tasks.charge_payment"
    make_records(
        5, state=states.FAILURE, finished_at=now - timedelta(hours=1), task_name=charge, runtimes=[1, 2, 3, 4, 5]
    )
    make_records(15, finished_at=now - timedelta(hours=2), task_name=charge, runtimes=range(6, 21))
    make_records(1, finished_at=now - timedelta(hours=30), task_name=charge, runtimes=[1000])  # too old
    make_records(1, state=states.PENDING, finished_at=None, task_name=charge)
    # Neither is a run: an attempt waiting to be retried, a revoked task.
    make_records(1, state=states.RETRY, finished_at=now - timedelta(minutes=1), task_name=charge, runtimes=[500])
    make_records(1, state=states.REVOKED, finished_at=now - timedelta(minutes=1), task_name=charge, runtimes=[500])
    sms = "orders.tasks.send_confirmation_sms"
    make_records(4, finished_at=now - timedelta(minutes=3), task_name=sms, runtimes=[0.2] * 4)
    # Killed by the hard time limit: a failed run without a runtime.
    make_records(1, state=states.FAILURE, finished_at=now - timedelta(minutes=3), task_name=sms, runtimes=[None])

    response = admin_client.get(URL)

    stats = {stat.task_name: stat for stat in response.context["task_stats"]}
    assert set(stats) == {charge, sms}
    assert (stats[charge].runs, stats[charge].failures, stats[charge].failure_rate) == (20, 5, 25.0)
    # Linear interpolation over runtimes 1..20: rank 9.5 and rank 18.05 (0-based).
    assert stats[charge].p50 == pytest.approx(10.5)
    assert stats[charge].p95 == pytest.approx(19.05)
    assert (stats[sms].runs, stats[sms].failures, stats[sms].failure_rate) == (5, 1, 20.0)
    assert stats[sms].p50 == pytest.approx(0.2) and stats[sms].p95 == pytest.approx(0.2)
    page = response.content.decode()
    assert task_row(page, charge) == [charge, "20", "5", "25.0%", "10.500 s", "19.050 s"]
    assert task_row(page, sms) == [sms, "5", "1", "20.0%", "0.200 s", "0.200 s"]
    assert f"latest {metrics.RUNTIME_SAMPLE} runtimes" in page


def test_runtime_percentiles_come_from_the_latest_runtimes_only():
    now = timezone.now()
    make_records(10, finished_at=now - timedelta(hours=3), runtimes=[100.0] * 10)
    make_records(10, finished_at=now - timedelta(hours=1), runtimes=[float(n) for n in range(1, 11)])

    [stat] = metrics.task_stats(since=now - timedelta(days=1), until=now, sample=10)

    assert stat.runs == 20
    assert (stat.p50, stat.p95) == (pytest.approx(5.5), pytest.approx(9.55))


def test_percentile_interpolates_between_ranks():
    assert metrics.percentile([], 0.5) is None
    assert metrics.percentile([7.0], 0.95) == 7.0
    assert metrics.percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert metrics.percentile([4.0, 1.0, 3.0, 2.0], 0.95) == pytest.approx(3.85)


def test_dead_letters_and_stuck_orders_are_counted_and_linked(admin_client, settings):
    now = timezone.now()
    make_records(2, state=states.FAILURE, finished_at=now)
    make_records(1, state=states.FAILURE, finished_at=now, expected_failure=True)  # a declined card
    make_records(1, state=states.FAILURE, finished_at=now, resolved_at=now)
    product = make_product(stock=10)
    orders = [
        place_order(
            customer=Customer(name="Stuck", email=f"stuck{n}@example.com", phone="+442079460111"),
            shipping_address="1 Slow Lane",
            items=[(product.sku, 1)],
            card_number=GOOD_CARD,
        )
        for n in range(3)
    ]
    reach(orders[2], Order.Status.ON_HOLD)  # waits for staff, not for the workflow: not stuck
    long_ago = now - timedelta(minutes=30)
    for order in (orders[0], orders[2]):  # placed, last moved and last sent 30 minutes ago
        Order.objects.filter(pk=order.pk).update(created_at=long_ago, updated_at=long_ago)
        TaskRecord.objects.about(order).update(sent_at=long_ago)
    settings.STUCK_WORKFLOW_MINUTES = 20

    page = get_page(admin_client)

    assert metric(page, "dead-letters") == "2"
    assert metric(page, "stuck-orders") == "1"
    stuck = "Stuck orders (no progress for 20 min)"  # the orders app's tile (orders/console.py)
    assert f'<a href="{reverse("admin:orders_order_changelist")}?workflow=stuck">{stuck}</a>' in page
    assert f'<a href="{reverse("admin:tasks_admin_deadletter_changelist")}">Dead letters</a>' in page

    settings.STUCK_WORKFLOW_MINUTES = 60
    assert metric(get_page(admin_client), "stuck-orders") == "0"


def test_page_refreshes_in_place_with_a_pause_and_links_to_the_task_history(admin_client):
    """No <meta http-equiv=refresh> (it reloads with no control): dashboard_live.js fetches the
    figures, with a Pause button and a polite live region (the browser test is test_accessibility.py)."""
    page = get_page(admin_client)

    assert 'http-equiv="refresh"' not in page
    assert "tasks_admin/dashboard_live.js" in page
    assert 'data-refresh-seconds="15"' in page and "data-refresh-toggle" in page
    assert 'aria-live="polite"' in page
    assert f'<a href="{reverse("admin:index")}">Home</a>' in page
    assert f'<a href="{reverse("admin:tasks_admin_taskrecord_changelist")}">Task history</a>' in page


def test_task_names_are_escaped(admin_client):
    make_records(1, finished_at=timezone.now(), task_name="<script>alert(1)</script>")

    page = get_page(admin_client)

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)</script>" not in page


def test_chart_escapes_its_title_and_has_an_accessible_name():
    start = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    buckets = [metrics.Bucket(start + timedelta(minutes=i), i, 0) for i in range(3)]

    svg = charts.throughput_chart(buckets, step=timedelta(minutes=1), chart_id="t", title='<b>"x"</b>')

    assert '<title id="chart-t-title">&lt;b&gt;&quot;x&quot;&lt;/b&gt;</title>' in svg
    assert 'aria-labelledby="chart-t-title chart-t-desc"' in svg
    assert "3 succeeded and 0 failed from 12:00 to 12:03 UTC." in svg
    assert ">succeeded (3)</text>" in svg and ">failed (0)</text>" in svg


def test_staff_with_the_view_permission_gets_the_page(client, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(
        Permission.objects.get(content_type__app_label="tasks_admin", codename="view_taskrecord")
    )
    client.force_login(viewer)

    assert client.get(URL).status_code == 200


def test_staff_without_the_permission_is_refused(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("clerk", password="x", is_staff=True))

    assert client.get(URL).status_code == 403


def test_anonymous_is_sent_to_the_admin_login(client):
    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('admin:login')}?next={URL}"
