"""/metrics: not public, and each series read from the task history, the broker, the beat lease
and the apps' own tables at scrape time (tasks_admin/prometheus.py, tasks_admin/collectors.py,
orders/metrics.py, notifications/metrics.py)."""

import base64
import uuid
from datetime import timedelta
from unittest.mock import Mock

import pytest
from celery import states
from django.db import DatabaseError, connection
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from kombu import Exchange, Queue
from prometheus_client.parser import text_string_to_metric_families

from notifications.models import Notification
from orders import services, tally, workflow
from orders.checkout import Customer, place_order
from orders.models import Order, WorkflowStep
from shop.celery import app as celery_app
from tasks_admin import prometheus
from tasks_admin import tally as task_tally
from tasks_admin.cleanup import cleanup_task_history
from tasks_admin.models import SchedulerLock, TaskRecord
from tests.factories import GOOD_CARD, make_product, reach

pytestmark = pytest.mark.django_db
State = WorkflowStep.State
TOKEN = "s3cret-metrics-token"


@pytest.fixture
def scrape(client, settings, broker_url):
    settings.METRICS_TOKEN = TOKEN

    def get() -> dict[tuple, float]:
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain; version=0.0.4")
        return {
            (sample.name, *sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.content.decode())
            for sample in family.samples
        }

    return get


def value(samples: dict[tuple, float], name: str, **labels: str) -> float | None:
    return samples.get((name, *sorted(labels.items())))


def record(name: str, state: str, *, runtime: float | None = None, waited: float | None = None, **fields) -> TaskRecord:
    sent = timezone.now() - timedelta(minutes=5)
    return TaskRecord.objects.create(
        task_id=str(uuid.uuid4()),
        task_name=name,
        state=state,
        sent_at=sent,
        started_at=sent + timedelta(seconds=waited) if waited is not None else None,
        finished_at=timezone.now() if state in (states.SUCCESS, states.FAILURE) else None,
        runtime=runtime,
        **fields,
    )


def test_metrics_are_off_without_a_token_and_refused_without_the_right_one(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404

    settings.METRICS_TOKEN = TOKEN
    basic = base64.b64encode(f"prometheus:{TOKEN}".encode()).decode()
    for header in ("", f"Bearer {TOKEN}x", "Bearer", f"Token {TOKEN}", "Basic %%%", "Basic " + basic[:-4]):
        response = client.get("/metrics", HTTP_AUTHORIZATION=header)
        assert response.status_code == 401, header
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert b"celery_" not in response.content
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {basic}").status_code == 200


def test_tasks_by_name_and_state_with_runtime_and_queue_wait_histograms(scrape):
    name = "tests.metrics.probe"
    record(name, states.SUCCESS, runtime=0.03, waited=0.5)
    record(name, states.SUCCESS, runtime=2.0, waited=20)
    record(name, states.FAILURE, runtime=0.2, waited=0.05)
    record(name, states.REVOKED)
    record(name, states.FAILURE, runtime=0.02, waited=0.05, expected_failure=True)  # a declined card, say
    record(name, states.PENDING)  # not finished: not counted

    samples = scrape()
    assert value(samples, "celery_tasks_total", task=name, state="SUCCESS") == 2
    assert value(samples, "celery_tasks_total", task=name, state="FAILURE") == 1
    assert value(samples, "celery_tasks_total", task=name, state="REVOKED") == 1
    assert value(samples, "celery_tasks_total", task=name, state="EXPECTED_FAILURE") == 1
    assert value(samples, "celery_tasks_total", task=name, state="PENDING") is None

    # Cumulative buckets, count and sum of each histogram: runs 0.02, 0.03, 0.2 and 2 s long,
    # started 0.05, 0.05, 0.5 and 20 s after they were sent.
    histograms = {
        "celery_task_runtime_seconds": ({"0.05": 2, "0.25": 3, "2.5": 4, "+Inf": 4}, 2.25),
        "celery_task_queue_wait_seconds": ({"0.1": 2, "1.0": 3, "10.0": 3, "30.0": 4, "+Inf": 4}, 20.6),
    }
    for metric, (buckets, total) in histograms.items():
        assert {le: value(samples, f"{metric}_bucket", task=name, le=le) for le in buckets} == buckets, metric
        assert value(samples, f"{metric}_count", task=name) == 4
        assert value(samples, f"{metric}_sum", task=name) == pytest.approx(total)


def finished(name: str, state: str, ago: timedelta, runtime: float = 0.03) -> TaskRecord:
    """A run that ended `ago` (sent a second before it started, 0.1 s before it ended)."""
    end = timezone.now() - ago
    return TaskRecord.objects.create(
        task_id=str(uuid.uuid4()),
        task_name=name,
        state=state,
        sent_at=end - timedelta(seconds=1.1),
        started_at=end - timedelta(seconds=0.1),
        finished_at=end,
        runtime=runtime,
    )


def task_figures(samples: dict[tuple, float], name: str) -> dict[str, float | None]:
    return {
        "succeeded": value(samples, "celery_tasks_total", task=name, state="SUCCESS"),
        "failed": value(samples, "celery_tasks_total", task=name, state="FAILURE"),
        "runtime_count": value(samples, "celery_task_runtime_seconds_count", task=name),
        "runtime_le_0.05": value(samples, "celery_task_runtime_seconds_bucket", task=name, le="0.05"),
        "wait_sum": value(samples, "celery_task_queue_wait_seconds_sum", task=name),
    }


def test_each_finished_run_is_counted_once_whether_folded_into_the_tally_yet_or_not(scrape):
    """tasks_admin/tally.py: a scrape folds the runs that ended over a minute ago into the tally
    and adds the rest from the history; the figures never move when runs are folded."""
    name = "tests.metrics.tallied"
    for ago in (timedelta(hours=2), timedelta(minutes=5), timedelta(seconds=5)):
        finished(name, states.SUCCESS, ago)
    finished(name, states.FAILURE, timedelta(minutes=3), runtime=2.0)
    expected = {"succeeded": 3, "failed": 1, "runtime_count": 4, "runtime_le_0.05": 3, "wait_sum": pytest.approx(4.0)}

    assert task_figures(scrape(), name) == expected
    assert TaskRecord.objects.filter(task_name=name, tallied=True).count() == 3  # the scrape folded the old ones
    assert task_figures(scrape(), name) == expected  # scraped again: nothing counted twice
    assert task_tally.settle(now=timezone.now() + timedelta(minutes=5)) == 1  # the last one, later
    assert task_figures(scrape(), name) == expected


def test_the_cleanup_does_not_lower_the_counters(scrape, settings):
    """Counted before deleted (cleanup.py): before the tally, the nightly cleanup lowered every
    task counter by the runs it deleted."""
    settings.TASK_HISTORY_DAYS = 7
    name = "tests.metrics.cleaned"
    for _ in range(3):
        finished(name, states.SUCCESS, timedelta(days=8))
    finished(name, states.SUCCESS, timedelta(days=1))
    before = task_figures(scrape(), name)
    assert before["succeeded"] == 4

    assert cleanup_task_history()["task_records"] == 3
    assert TaskRecord.objects.filter(task_name=name).count() == 1
    assert task_figures(scrape(), name) == before


def test_a_run_recorded_late_is_counted_once(scrape):
    """A worker that lost its database writes a run's end when it is back, with the time the run
    ended: the tally has moved past that time, and the run is counted all the same."""
    name = "tests.metrics.late"
    run = finished(name, states.STARTED, timedelta(minutes=30))
    TaskRecord.objects.filter(pk=run.pk).update(finished_at=None)
    assert task_figures(scrape(), name)["succeeded"] is None

    TaskRecord.objects.filter(pk=run.pk).update(
        state=states.SUCCESS, finished_at=timezone.now() - timedelta(minutes=20)
    )
    assert task_figures(scrape(), name)["succeeded"] == 1
    assert task_figures(scrape(), name)["succeeded"] == 1


def test_dead_letters_beat_lease_and_periodic_jobs(scrape):
    record("tests.metrics.dead", states.FAILURE)
    record("tests.metrics.declined", states.FAILURE, expected_failure=True)  # an outcome, not a dead letter
    record("tests.metrics.resolved", states.FAILURE, resolved_at=timezone.now())
    every_minute = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    late = PeriodicTask.objects.create(name="late job", task="tests.metrics.job", interval=every_minute)
    PeriodicTask.objects.filter(pk=late.pk).update(last_run_at=timezone.now() - timedelta(minutes=10))
    PeriodicTask.objects.create(
        name="on time", task="tests.metrics.job", interval=every_minute, last_run_at=timezone.now()
    )
    PeriodicTask.objects.create(name="disabled", task="tests.metrics.job", interval=every_minute, enabled=False)
    succeeded = record("tests.metrics.job", states.SUCCESS, periodic_task_name="late job")
    record("tests.metrics.job", states.FAILURE, periodic_task_name="on time")

    samples = scrape()
    assert value(samples, "celery_dead_letters") == 2  # tests.metrics.dead, and the failed run of "on time"
    assert value(samples, "celery_beat_lease_up") == 0
    assert value(samples, "celery_periodic_lateness_seconds", job="late job") == pytest.approx(9 * 60, abs=5)
    assert value(samples, "celery_periodic_lateness_seconds", job="on time") == 0
    assert value(samples, "celery_periodic_lateness_seconds", job="disabled") is None
    assert value(samples, "celery_periodic_last_success_timestamp_seconds", job="late job") == pytest.approx(
        succeeded.finished_at.timestamp()
    )
    assert value(samples, "celery_periodic_last_success_timestamp_seconds", job="on time") is None

    SchedulerLock.objects.create(name="celery-beat", owner="host:1:abc", expires_at=timezone.now() + timedelta(30))
    samples = scrape()
    assert value(samples, "celery_beat_lease_up") == 1
    assert value(samples, "celery_beat_lease_owner", lease="celery-beat", owner="host:1:abc") == 1


def test_queue_depth_and_the_age_of_its_oldest_message_are_read_from_the_broker(scrape, settings):
    queue = Queue("metrics-test", Exchange("metrics-test"), routing_key="metrics-test")
    settings.CELERY_TASK_QUEUES = [*settings.CELERY_TASK_QUEUES, queue]
    try:
        empty = scrape()
        assert value(empty, "celery_broker_up") == 1
        assert value(empty, "celery_queue_messages", queue="metrics-test") == 0
        assert value(empty, "celery_queue_oldest_message_age_seconds", queue="metrics-test") == 0

        first = celery_app.send_task("tests.metrics.nonexistent", queue=queue)
        for _ in range(2):
            celery_app.send_task("tests.metrics.nonexistent", queue=queue)
        # As if the first had been sent 90 s ago (its send time is in the history).
        TaskRecord.objects.filter(task_id=first.id).update(sent_at=timezone.now() - timedelta(seconds=90))

        samples = scrape()
        assert value(samples, "celery_queue_messages", queue="metrics-test") == 3
        assert value(samples, "celery_queue_oldest_message_age_seconds", queue="metrics-test") == pytest.approx(
            90, abs=5
        )
        # Read without taking: still three, the oldest first.
        again = scrape()
        assert value(again, "celery_queue_messages", queue="metrics-test") == 3
        assert value(again, "celery_queue_oldest_message_age_seconds", queue="metrics-test") >= 90
    finally:
        with celery_app.connection_for_write() as conn:
            queue(conn.default_channel).purge()
            queue(conn.default_channel).delete()


def test_orders_and_notifications_contribute_their_series(scrape):
    product = make_product(stock=10)
    orders = [
        place_order(
            customer=Customer(name="Metrics", email=f"m{i}@example.com", phone="+442079461234"),
            shipping_address="1 Metric Road",
            items=[(product.sku, 1)],
            card_number=GOOD_CARD,
        )
        for i in range(3)
    ]
    reach(orders[0], Order.Status.CONFIRMED)
    reach(orders[1], Order.Status.CANCELLED)
    Notification.objects.create(
        idempotency_key="metrics:1", order=orders[0], channel="sms", recipient="+442079461234", body="hi", status="sent"
    )

    samples = scrape()
    assert value(samples, "shop_orders", status="pending") == 1
    assert value(samples, "shop_orders", status="confirmed") == 1
    assert value(samples, "shop_orders", status="cancelled") == 1
    assert value(samples, "shop_orders", status="failed") == 0
    assert value(samples, "shop_orders_placed_total") == 3
    assert value(samples, "shop_orders_stuck") == 0
    assert value(samples, "shop_notifications", channel="sms", status="sent") == 1
    assert value(samples, "shop_notifications", channel="email", status="sent") == 0
    assert value(samples, "metrics_collector_up", collector="orders") == 1
    assert value(samples, "metrics_collector_up", collector="notifications") == 1


def step_figures(samples: dict[tuple, float], step: str) -> dict[str, float | None]:
    return {
        state: value(samples, "shop_order_steps_total", step=step, state=state)
        for state in (State.SUCCESS, State.FAILURE, State.SKIPPED)
    }


def placed_order() -> Order:
    return place_order(
        customer=Customer(name="Steps", email="steps@example.com", phone="+442079461234"),
        shipping_address="1 Metric Road",
        items=[(make_product(stock=10).sku, 1)],
        card_number=GOOD_CARD,
    )


def succeed_through_sql(order: Order, step: str) -> None:
    """The statement that settles a step with its effect, on PostgreSQL (services.settled_clause)."""
    if connection.vendor != "postgresql":
        pytest.skip("services.settled_clause is PostgreSQL's statement (SQLite settles with settle_step)")
    sql, params = services.settled_clause(order.pk, step)
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {sql} SELECT 1", params)


@pytest.mark.parametrize("succeed", ["settle_step", "settled_clause"])
def test_a_step_that_failed_then_succeeded_is_counted_twice_and_no_counter_goes_down(scrape, succeed):
    """orders/tally.py: a charge fails, staff continue the order, the charge succeeds. Counted from
    the steps' outcomes at each scrape, the failures fell from 1 back to 0 (to Prometheus, a
    counter reset) and 6,000,000 steps took 2 s a scrape; the tally counts each settlement once."""
    order = placed_order()
    assert step_figures(scrape(), workflow.CHARGE) == {State.SUCCESS: 0, State.FAILURE: 0, State.SKIPPED: 0}
    services.settle_step(order.pk, workflow.CHARGE, State.FAILURE, error="gateway unreachable")
    assert step_figures(scrape(), workflow.CHARGE) == {State.SUCCESS: 0, State.FAILURE: 1, State.SKIPPED: 0}
    assert not tally.untallied().exists()  # the scrape folded it

    services.continue_order(order.pk, actor="staff:metrics")  # sent again (published on commit)
    if succeed == "settle_step":
        services.settle_step(order.pk, workflow.CHARGE, State.SUCCESS)
    else:
        succeed_through_sql(order, workflow.CHARGE)
    expected = {State.SUCCESS: 1, State.FAILURE: 1, State.SKIPPED: 0}
    assert step_figures(scrape(), workflow.CHARGE) == expected
    assert step_figures(scrape(), workflow.CHARGE) == expected  # scraped again: nothing counted twice


def test_settled_steps_are_counted_whether_folded_into_the_tally_yet_or_not(scrape, monkeypatch, caplog):
    """A scrape that cannot fold (on a read-only replica, say) counts the steps not folded all
    the same, and the next fold moves them into the tally without changing a figure."""
    order = placed_order()
    services.cancel_order(order.pk, reason="changed my mind", actor="customer")  # every step not run
    figures = {step: step_figures(scrape(), step) for step in workflow.STEPS}
    assert figures == {step: {State.SUCCESS: 0, State.FAILURE: 0, State.SKIPPED: 1} for step in workflow.STEPS}
    assert tally.settle() == 0  # folded by the scrape

    other = placed_order()
    services.cancel_order(other.pk, reason="changed my mind", actor="customer")
    with monkeypatch.context() as patch:
        patch.setattr(
            tally, "settle", Mock(side_effect=DatabaseError("cannot execute UPDATE in a read-only transaction"))
        )
        figures = {step: step_figures(scrape(), step) for step in workflow.STEPS}
    assert figures == {step: {State.SUCCESS: 0, State.FAILURE: 0, State.SKIPPED: 2} for step in workflow.STEPS}
    assert "Could not fold settled steps into their tally" in caplog.text
    assert tally.settle() == len(workflow.STEPS)
    assert {step: step_figures(scrape(), step) for step in workflow.STEPS} == figures


def test_http_requests_by_route_and_status(client, scrape):
    client.get("/api/products/")
    client.get(f"/api/orders/{uuid.uuid4()}/")  # 404, labelled by its pattern, not its id
    client.get("/no-such-page/")

    samples = scrape()
    seconds = "http_request_duration_seconds_count"
    assert value(samples, seconds, method="GET", route="/api/products/", status="200") >= 1
    assert value(samples, seconds, method="GET", route="/api/orders/<uuid:pk>/", status="404") >= 1
    assert value(samples, seconds, method="GET", route="unrouted", status="404") >= 1


def test_a_failing_collector_is_left_out_and_the_others_still_answer(scrape, monkeypatch):
    class Broken:
        def collect(self):
            raise DatabaseError("the database is down")

    monkeypatch.setitem(prometheus._collectors, "broken", Broken())
    samples = scrape()
    assert value(samples, "metrics_collector_up", collector="broken") == 0
    assert value(samples, "metrics_collector_up", collector="tasks") == 1
    assert value(samples, "celery_dead_letters") == 0
