"""Business alerts with the shop as real processes (web, two workers, beat, a private Redis): a
worker killed with orders paid opens "paid, not confirmed" within its threshold, e-mailed and
POSTed once, and resolves once the worker is back; a periodic job switched off opens "missed
its window"."""

from collections.abc import Iterator
from datetime import timedelta

import pytest
from celery import states
from django.db.models import Min
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from orders.models import Order, Payment
from tasks_admin import alerts
from tasks_admin.models import Alert, AlertRule, TaskRecord
from tests import processes
from tests.factories import make_product, order_payload
from tests.fakes import switches
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.fakes.smtp_server import FakeSmtpServer
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.reliability.harness import Stack
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

THRESHOLD_MINUTES = 0.05  # 3 s: the test's "N minutes"
SLACK = 20  # seconds on top of it: the evaluation runs every second on a machine under load
OPS = "ops@example.com"
ORDERS_WORKER = ("-Q", "orders,notifications", "--concurrency", "2")


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def stack(transactional_db, receiver, tmp_path, request) -> Iterator[Stack]:
    with FakeSmsGateway() as sms, FakeSmtpServer() as smtp:
        env = {
            "ALERT_EMAILS": OPS,
            "ALERT_WEBHOOK_URL": receiver.url,
            "ALERT_WEBHOOK_SECRET": "integration",
            "BEAT_LOCK_SECONDS": "3",
            "FAULT_SWITCHES": switches.SHIPMENT,
        }
        running = Stack(tmp_path / "stack", processes.test_database_url(), sms, smtp, env=env)
        try:
            yield running
        finally:
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                print(running.logs())
            running.stop()


def only_rule(key: str, threshold: float) -> None:
    """Every rule off but this one, at this threshold."""
    alerts.rule_rows()
    AlertRule.objects.exclude(key=key).update(enabled=False)
    AlertRule.objects.filter(key=key).update(enabled=True, threshold=threshold)


def every_second(name: str, task: str, seconds: int = 1) -> PeriodicTask:
    interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)
    return PeriodicTask.objects.create(name=name, task=task, interval=interval)


def open_alert(key: str, subject: str = "") -> Alert | None:
    return Alert.objects.filter(rule__key=key, subject_key=subject, resolved_at__isnull=True).first()


def test_a_worker_down_with_orders_paid_opens_the_alert_within_its_threshold_and_it_resolves_when_back(stack, receiver):
    only_rule("order-paid-not-confirmed", THRESHOLD_MINUTES)
    every_second("Evaluate alert rules", "tasks_admin.tasks.evaluate_alerts")
    product = make_product(stock=10)
    stack.start(workers=0, web=True)
    stack.start_worker("-Q", "celery")  # the task layer's jobs: the alert job and its notices
    orders_worker = stack.start_worker(*ORDERS_WORKER, CELERY_TASK_SOFT_TIME_LIMIT="60", CELERY_TASK_TIME_LIMIT="70")
    stack.start_beat()
    receiver.answer(503)  # the first POST fails: its task retries it with backoff

    # The shipment step hangs; the orders are paid; their worker dies.
    with switches.slow(stack.fault_dir, switches.SHIPMENT, 60):
        order_ids = stack.place_orders([order_payload((product, 1)) for _ in range(2)])
        wait_for(
            lambda: Order.objects.filter(pk__in=order_ids, status=Order.Status.PAID).count() == 2,
            message="both orders paid",
        )
        stack.kill_worker(orders_worker)
    paid_at = Payment.objects.filter(order_id__in=order_ids).aggregate(first=Min("captured_at"))["first"]

    alert = wait_for(
        lambda: open_alert("order-paid-not-confirmed"), timeout=THRESHOLD_MINUTES * 60 + SLACK, message="the alert"
    )
    assert alert.opened_at <= paid_at + timedelta(minutes=THRESHOLD_MINUTES, seconds=SLACK)
    assert alert.opened_at >= paid_at + timedelta(minutes=THRESHOLD_MINUTES)  # not before its threshold
    # One alert for the condition, updated while it holds: both orders, linked.
    numbers = set(Order.objects.filter(pk__in=order_ids).values_list("number", flat=True))
    alert = wait_for(
        lambda: (a := Alert.objects.get(pk=alert.pk)) and len(a.subjects) == 2 and a, message="both orders in the alert"
    )
    assert all(number in alert.summary for number in numbers)
    assert {ref["id"].replace("-", "") for ref in alert.subjects} == {str(pk).replace("-", "") for pk in order_ids}
    wait_for(lambda: stack.smtp.received(to=OPS), message="the e-mail")
    wait_for(lambda: receiver.delivered(), message="the webhook, on its second try")

    # The worker is back: the killed steps come back to it, the orders confirm, the alert resolves.
    # As in production, the stuck-workflow recovery job runs too: a step the worker was sent just as
    # it died can be gone for good, since kombu's Redis transport pops a message (BRPOP) before it
    # records it unacknowledged (seen once in CI: one order's steps never came back).
    every_second("Recover stuck workflows", "orders.tasks.recover_stuck_workflows", seconds=2)
    stack.start_worker(*ORDERS_WORKER)
    stack.wait_until_final(order_ids, timeout=90, settled=False)
    wait_for(lambda: Alert.objects.get(pk=alert.pk).resolved_at, timeout=SLACK, message="the alert resolved")
    wait_for(lambda: len(receiver.delivered()) == 2 and len(stack.smtp.received(to=OPS)) == 2, message="notices")

    # Three more evaluations, counted as they finish (not a sleep, which a busy machine can fill
    # with none): nothing more is sent.
    evaluations = TaskRecord.objects.filter(task_name="tasks_admin.tasks.evaluate_alerts", state=states.SUCCESS)
    seen = evaluations.count()
    wait_for(lambda: evaluations.count() >= seen + 3, timeout=SLACK, message="three more evaluations")
    subjects = [message.subject for message in stack.smtp.received(to=OPS)]
    assert subjects == [
        "[Shop alert opened] Order paid, not confirmed",
        "[Shop alert resolved] Order paid, not confirmed",
    ]
    posts = receiver.requests
    assert [(r.status, r.json["transition"]) for r in posts] == [(503, "opened"), (200, "opened"), (200, "resolved")]
    assert {r.headers["Idempotency-Key"] for r in posts} == {f"alert-{alert.pk}-opened", f"alert-{alert.pk}-resolved"}
    assert Alert.objects.filter(rule__key="order-paid-not-confirmed").count() == 1


def test_a_periodic_job_switched_off_opens_the_missed_window_alert(stack):
    job_name = "Recover stuck workflows"  # one of the orders' default jobs
    only_rule("periodic-job-late", THRESHOLD_MINUTES)
    every_second("Evaluate alert rules", "tasks_admin.tasks.evaluate_alerts")
    job = every_second(job_name, "orders.tasks.recover_stuck_workflows", seconds=2)
    stack.start(workers=0, web=False)
    stack.start_worker()
    stack.start_beat()

    wait_for(lambda: TaskRecord.objects.filter(periodic_task_name=job_name).count() >= 3, message="runs of the job")
    assert open_alert("periodic-job-late", job_name) is None  # on time
    job.enabled = False
    job.save()
    switched_off = timezone.now()

    alert = wait_for(
        lambda: open_alert("periodic-job-late", job_name),
        timeout=2 + THRESHOLD_MINUTES * 60 + SLACK,
        message="the missed-window alert",
    )
    assert alert.opened_at - switched_off <= timedelta(seconds=2 + THRESHOLD_MINUTES * 60 + SLACK)
    assert "It is switched off" in alert.summary
    assert alert.subjects == [{"type": "django_celery_beat.periodictask", "id": str(job.pk)}]
    assert open_alert("periodic-job-late", "Evaluate alert rules") is None  # the running one is on time
