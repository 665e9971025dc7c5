"""Business alerts: opened once per condition, updated while it holds, resolved when it clears,
each transition notified once per channel; acknowledged once, with its own permission; the rules."""

import hashlib
import hmac
import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from io import StringIO
from unittest import mock

import pytest
from celery import states
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from orders import lifecycle
from orders.checkout import Customer, place_order
from orders.models import Order, Payment
from tasks_admin import alert_delivery, alert_rules, alerts
from tasks_admin.beat import LOCK_NAME, acquire_lease
from tasks_admin.errors import PermanentProviderError, TransientProviderError
from tasks_admin.models import Alert, AlertNotice, AlertRule, TaskRecord
from tasks_admin.tasks import deliver_alert_notice
from tests.factories import make_product, reach
from tests.fakes.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.django_db

SECRET = "test-secret"


@pytest.fixture
def dead_letters_only() -> None:
    """Only the dead-letters rule runs: the engine's tests are about one rule's alerts."""
    alerts.rule_rows()
    AlertRule.objects.exclude(key="dead-letters").update(enabled=False)


@pytest.fixture
def receiver(settings, dead_letters_only):
    with WebhookReceiver() as server:
        settings.ALERT_WEBHOOK_URL = server.url
        settings.ALERT_WEBHOOK_SECRET = SECRET
        settings.ALERT_EMAILS = ["ops@example.com"]
        yield server


def record(state: str = states.FAILURE, *, ago: timedelta = timedelta(0), **fields) -> TaskRecord:
    at = timezone.now() - ago
    return TaskRecord.objects.create(
        task_id=str(uuid.uuid4()),
        task_name=fields.pop("task_name", "orders.tasks.create_shipment"),
        state=state,
        sent_at=at - timedelta(seconds=1),
        finished_at=at if state in (states.SUCCESS, states.FAILURE) else None,
        **fields,
    )


def open_alerts(key: str) -> list[Alert]:
    return list(Alert.objects.filter(rule__key=key, resolved_at__isnull=True))


def notices(alert: Alert) -> list[tuple[str, str]]:
    return sorted(alert.notices.values_list("transition", "channel"))


def test_an_alert_opens_once_updates_while_it_holds_and_resolves_once_with_one_notice_per_transition(receiver):
    letter = record()
    made = alerts.evaluate()
    [alert] = open_alerts("dead-letters")
    assert alert.value == 1 and alert.summary == "1 dead letter waiting for staff (more than 0)."
    assert alert.subjects == [{"type": "tasks_admin.taskrecord", "id": str(letter.pk)}]
    assert notices(alert) == [("opened", "email"), ("opened", "webhook")]
    assert sorted(made) == sorted(alert.notices.values_list("pk", flat=True))

    record()
    assert alerts.evaluate() == []  # still holds: updated, no new alert, no new notice
    [same] = open_alerts("dead-letters")
    assert same.pk == alert.pk and same.value == 2 and same.last_seen_at > alert.last_seen_at
    assert Alert.objects.filter(rule__key="dead-letters").count() == 1

    TaskRecord.objects.update(resolved_at=timezone.now())
    made = alerts.evaluate()
    alert.refresh_from_db()
    assert alert.resolved_at is not None and open_alerts("dead-letters") == []
    assert notices(alert) == [
        ("opened", "email"),
        ("opened", "webhook"),
        ("resolved", "email"),
        ("resolved", "webhook"),
    ]
    assert len(made) == 2
    assert alerts.evaluate() == []  # resolved once

    record()  # the condition again: a new alert
    alerts.evaluate()
    [again] = open_alerts("dead-letters")
    assert again.pk != alert.pk


def test_two_evaluations_at_once_open_one_alert(receiver):
    record()
    rows = alerts.rule_rows()
    finding = next(iter(alert_rules.dead_letters(rows["dead-letters"], timezone.now())))
    first = alerts._open(rows["dead-letters"], finding, timezone.now())
    second = alerts._open(rows["dead-letters"], finding, timezone.now())  # refused by the constraint
    assert len(first) == 2 and second == []
    assert Alert.objects.count() == 1 and AlertNotice.objects.count() == 2


def test_a_disabled_rule_resolves_its_alerts_and_a_threshold_edited_applies(receiver):
    record()
    record()
    alerts.evaluate()
    assert open_alerts("dead-letters")
    AlertRule.objects.filter(key="dead-letters").update(threshold=2)
    alerts.evaluate()
    assert open_alerts("dead-letters") == []  # 2 is not above 2
    AlertRule.objects.filter(key="dead-letters").update(threshold=0, enabled=False)
    alerts.evaluate()
    assert open_alerts("dead-letters") == []


def test_a_rule_that_raises_leaves_its_alerts_and_the_other_rules_run(receiver, monkeypatch):
    record()
    alerts.evaluate()
    [alert] = open_alerts("dead-letters")

    def broken(row, now):
        raise RuntimeError("boom")

    monkeypatch.setitem(alerts._rules, "dead-letters", alerts.Rule("dead-letters", "Dead letters", "n", 0, broken))
    TaskRecord.objects.update(resolved_at=timezone.now())
    alerts.evaluate()
    assert open_alerts("dead-letters") == [alert]  # not resolved by a rule that could not tell


def test_registering_two_rules_under_one_key_is_refused():
    rule = alerts.rule_for("dead-letters")
    alerts.register_rule(rule)  # the same rule again (a module imported twice): fine
    with pytest.raises(Exception, match="Two alert rules"):
        alerts.register_rule(alerts.Rule("dead-letters", "Other", "n", 1, alert_rules.no_beat))


# Delivery


def test_the_webhook_is_signed_carries_the_alert_and_is_sent_once_per_transition(receiver):
    record()
    [email, webhook] = sorted(alerts.evaluate(), key=lambda pk: AlertNotice.objects.get(pk=pk).channel)
    assert alert_delivery.deliver(webhook) is True
    assert alert_delivery.deliver(webhook) is False  # a repeat of its task sends nothing
    [request] = receiver.requests
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Alert-Signature"] == expected
    alert = Alert.objects.get()
    assert request.headers["Idempotency-Key"] == f"alert-{alert.pk}-opened"
    body = json.loads(request.body)
    assert (body["id"], body["transition"], body["rule"], body["title"]) == (
        alert.pk,
        "opened",
        "dead-letters",
        "Dead letters",
    )
    assert body["url"].endswith(reverse("admin:tasks_admin_alert_change", args=[alert.pk]))
    assert body["subjects"][0]["url"].endswith(
        reverse("admin:tasks_admin_taskrecord_change", args=[alert.subjects[0]["id"]])
    )


def test_a_webhook_that_fails_transiently_is_retried_and_a_refusal_is_not(receiver):
    record()
    alerts.evaluate()
    webhook = AlertNotice.objects.get(channel="webhook")
    receiver.answer(503, 400)
    with pytest.raises(TransientProviderError):
        alert_delivery.deliver(webhook.pk)
    with pytest.raises(PermanentProviderError):
        alert_delivery.deliver(webhook.pk)
    webhook.refresh_from_db()
    assert (webhook.sent_at, webhook.attempts) == (None, 2) and "400" in webhook.error
    assert alert_delivery.deliver(webhook.pk) is True


def test_the_email_goes_to_alert_emails_with_links(receiver, mailoutbox):
    record()
    alerts.evaluate()
    alert_delivery.deliver(AlertNotice.objects.get(channel="email").pk)
    [message] = mailoutbox
    assert message.to == ["ops@example.com"]
    assert message.subject == "[Shop alert opened] Dead letters"
    assert "/admin/tasks_admin/alert/" in message.body and "/admin/tasks_admin/taskrecord/" in message.body


def test_a_webhook_url_without_a_secret_is_a_configuration_error():
    env = {"ALERT_WEBHOOK_URL": "http://example.invalid/", "DJANGO_SETTINGS_MODULE": "settings"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "ALERT_WEBHOOK_URL needs ALERT_WEBHOOK_SECRET" in result.stderr


# Acknowledging


def test_acknowledged_once_with_who_when_and_a_note(admin_user, django_user_model, dead_letters_only):
    record()
    alerts.evaluate()
    alert = Alert.objects.get()
    assert alerts.acknowledge(alert, user=admin_user, note="on it")
    other = django_user_model.objects.create_user("other")
    assert not alerts.acknowledge(alert, user=other, note="me too")
    alert.refresh_from_db()
    assert (alert.acknowledged_by, alert.acknowledgement_note) == (admin_user, "on it")
    assert alert.acknowledged_at is not None and alert.is_open


def test_acknowledging_takes_its_own_permission_and_a_post(client, django_user_model, dead_letters_only):
    record()
    alerts.evaluate()
    alert = Alert.objects.get()
    url = reverse("admin:tasks_admin_alert_acknowledge", args=[alert.pk])
    staff = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_alert"))
    client.force_login(staff)
    page = client.get(reverse("admin:tasks_admin_alert_change", args=[alert.pk]))
    assert page.status_code == 200 and b"acknowledge-button" not in page.content
    assert client.post(url, {"note": "x"}).status_code == 403

    staff.user_permissions.add(Permission.objects.get(codename="acknowledge_alert"))
    staff = django_user_model.objects.get(pk=staff.pk)
    client.force_login(staff)
    assert b"acknowledge-button" in client.get(reverse("admin:tasks_admin_alert_change", args=[alert.pk])).content
    assert client.get(url).status_code == 405
    assert client.post(url, {"note": "looking"}).status_code == 302
    alert.refresh_from_db()
    assert (alert.acknowledged_by, alert.acknowledgement_note) == (staff, "looking")
    # Nothing else about an alert is changed from the admin.
    assert client.post(reverse("admin:tasks_admin_alert_change", args=[alert.pk]), {"summary": "x"}).status_code == 403


# The rules


def rule_findings(key: str) -> list[alerts.Finding]:
    row = alerts.rule_rows()[key]
    return list(alerts.rule_for(key).evaluate(row, timezone.now()))


def paid_order(captured_ago: timedelta) -> Order:
    with mock.patch("orders.workflow.publish", return_value=False):
        order = place_order(
            customer=Customer(name="A", email="a@example.com", phone="+442079461234"),
            shipping_address="1 Lane",
            items=[(make_product().sku, 1)],
            card_number="4242 4242 4242 4242",
        )
    reach(order, Order.Status.PAID)
    Payment.objects.filter(order=order).update(status="captured", captured_at=timezone.now() - captured_ago)
    return order


def test_an_order_paid_and_not_confirmed_within_the_threshold_alerts_with_a_link_to_it():
    AlertRule.objects.update_or_create(key="order-paid-not-confirmed", defaults={"threshold": 10})
    late, recent = paid_order(timedelta(minutes=11)), paid_order(timedelta(minutes=1))
    [finding] = rule_findings("order-paid-not-confirmed")
    assert list(finding.subjects) == [late] and late.number in finding.summary and recent.number not in finding.summary
    assert lifecycle.move(late, lifecycle.CONFIRM)
    assert rule_findings("order-paid-not-confirmed") == []


def test_an_order_stuck_in_a_state_that_is_not_final_alerts():
    AlertRule.objects.update_or_create(key="order-stuck", defaults={"threshold": 30})
    order = paid_order(timedelta(minutes=1))
    assert rule_findings("order-stuck") == []
    Order.objects.filter(pk=order.pk).update(updated_at=timezone.now() - timedelta(minutes=31))
    [finding] = rule_findings("order-stuck")
    assert list(finding.subjects) == [order]


def periodic(name: str, *, seconds: int = 60, enabled: bool = True) -> PeriodicTask:
    interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)
    return PeriodicTask.objects.create(
        name=name, task="tasks_admin.tasks.evaluate_alerts", interval=interval, enabled=enabled
    )


def ran(job: PeriodicTask, ago: timedelta) -> None:
    record(states.SUCCESS, ago=ago, periodic_task_name=job.name, task_name=job.task)


def test_a_periodic_job_that_missed_its_window_by_more_than_its_grace_alerts(settings):
    AlertRule.objects.update_or_create(key="periodic-job-late", defaults={"threshold": 1})  # 1 min grace
    on_time, late, never = periodic("on time"), periodic("late"), periodic("never")
    ran(on_time, timedelta(seconds=90))  # due 30 s ago: within its grace
    ran(late, timedelta(minutes=3))  # due 2 min ago
    PeriodicTask.objects.filter(pk=never.pk).update(date_changed=timezone.now() - timedelta(minutes=5))
    switched_off = periodic("switched off", enabled=False)
    ran(switched_off, timedelta(minutes=3))
    findings = {finding.key: finding for finding in rule_findings("periodic-job-late")}
    assert set(findings) == {"late", "never"}  # a custom job switched off is staff's choice
    assert list(findings["late"].subjects) == [late]

    # One of the apps' default jobs switched off is a job the shop needs that no longer runs.
    default = PeriodicTask.objects.get(pk=switched_off.pk)
    default.name = "Evaluate alert rules"
    default.save()
    TaskRecord.objects.filter(periodic_task_name="switched off").update(periodic_task_name=default.name)
    findings = {finding.key: finding for finding in rule_findings("periodic-job-late")}
    assert "It is switched off" in findings["Evaluate alert rules"].summary


def test_a_crontab_job_is_judged_from_its_crontab():
    AlertRule.objects.update_or_create(key="periodic-job-late", defaults={"threshold": 5})
    daily = CrontabSchedule.objects.create(minute="15", hour="0", timezone="UTC")
    job = PeriodicTask.objects.create(name="daily", task="tasks_admin.tasks.evaluate_alerts", crontab=daily)
    ran(job, timedelta(minutes=1))  # due again at the next 00:15
    assert rule_findings("periodic-job-late") == []
    TaskRecord.objects.filter(periodic_task_name="daily").update(sent_at=timezone.now() - timedelta(days=2))
    [finding] = rule_findings("periodic-job-late")
    assert finding.key == "daily"


def test_no_beat_holding_the_lease_alerts():
    AlertRule.objects.update_or_create(key="no-beat", defaults={"threshold": 0})
    assert [f.key for f in rule_findings("no-beat")] == [LOCK_NAME]
    assert acquire_lease("beat-1", 30)
    assert rule_findings("no-beat") == []


def test_a_queue_whose_oldest_task_waits_too_long_alerts():
    AlertRule.objects.update_or_create(key="queue-age", defaults={"threshold": 5})
    record(states.PENDING, ago=timedelta(minutes=6), queue="orders")
    record(states.PENDING, ago=timedelta(minutes=1), queue="notifications")
    record(states.PENDING, ago=timedelta(minutes=9), queue="celery", eta=timezone.now() + timedelta(minutes=1))
    [finding] = rule_findings("queue-age")
    assert finding.key == "orders" and finding.value >= 6


def test_a_task_failing_above_the_rate_over_the_window_alerts():
    AlertRule.objects.update_or_create(key="task-failure-rate", defaults={"threshold": 20, "window_minutes": 15})
    for _ in range(4):
        record(states.SUCCESS, task_name="a.flaky")
    record(states.FAILURE, task_name="a.flaky")  # 20 %: not above
    record(states.FAILURE, task_name="a.rare")  # one run: too few
    record(states.FAILURE, task_name="a.flaky", ago=timedelta(minutes=20))  # outside the window
    assert rule_findings("task-failure-rate") == []
    record(states.FAILURE, task_name="a.flaky")
    [finding] = rule_findings("task-failure-rate")
    assert finding.key == "a.flaky" and finding.value == pytest.approx(33.3)
    AlertRule.objects.filter(key="task-failure-rate").update(window_minutes=None)  # cleared by staff: the default
    [finding] = rule_findings("task-failure-rate")
    assert "in the last 15 min" in finding.summary


def test_the_watchdog_command_reports_a_dead_beat_without_beat(monkeypatch, settings):
    settings.ALERT_WEBHOOK_URL = ""
    alerts.rule_rows()
    AlertRule.objects.exclude(key="no-beat").update(enabled=False)
    queued: list[int] = []
    monkeypatch.setattr(deliver_alert_notice, "delay", queued.append)
    out = StringIO()

    call_command("evaluate_alerts", stdout=out)

    assert "open: no-beat (celery-beat): No beat has ever held the scheduler lease" in out.getvalue()
    assert queued == list(AlertNotice.objects.filter(channel="email").values_list("pk", flat=True))
    assert "notices queued: 1" in out.getvalue()
