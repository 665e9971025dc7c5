"""The alert rules in the admin: every registered rule listed, its switch, threshold and window
edited, a bad value refused with a message, none added or deleted; alerts read-only."""

import pytest
from django.urls import reverse

from tasks_admin import alerts
from tasks_admin.models import Alert, AlertRule

pytestmark = pytest.mark.django_db


def change_url(key: str) -> str:
    return reverse("admin:tasks_admin_alertrule_change", args=[AlertRule.objects.get(key=key).pk])


def test_every_registered_rule_is_listed_with_its_defaults(admin_client):
    page = admin_client.get(reverse("admin:tasks_admin_alertrule_changelist"))
    assert page.status_code == 200
    keys = set(AlertRule.objects.values_list("key", flat=True))
    assert keys == {
        "dead-letters",
        "dead-letters-growing",
        "periodic-job-late",
        "no-beat",
        "queue-age",
        "task-failure-rate",
        "order-paid-not-confirmed",
        "order-stuck",
    }
    assert AlertRule.objects.get(key="order-paid-not-confirmed").threshold == 10
    assert b"Order paid, not confirmed" in page.content


def test_staff_edit_a_threshold_and_a_window_and_a_negative_one_is_refused(admin_client):
    admin_client.get(reverse("admin:tasks_admin_alertrule_changelist"))
    url = change_url("task-failure-rate")
    answer = admin_client.post(url, {"enabled": "on", "threshold": "35", "window_minutes": "30"})
    assert answer.status_code == 302
    rule = AlertRule.objects.get(key="task-failure-rate")
    assert (rule.enabled, rule.threshold, rule.window_minutes) == (True, 35, 30)

    refused = admin_client.post(url, {"enabled": "on", "threshold": "-1", "window_minutes": "0"})
    assert refused.status_code == 200 and b"errornote" in refused.content
    assert AlertRule.objects.get(key="task-failure-rate").threshold == 35


def test_a_rule_without_a_window_shows_none_to_edit(admin_client):
    admin_client.get(reverse("admin:tasks_admin_alertrule_changelist"))
    page = admin_client.get(change_url("order-paid-not-confirmed"))
    assert b'name="threshold"' in page.content and b'name="window_minutes"' not in page.content


def test_rules_are_not_added_or_deleted_and_alerts_are_not_added(admin_client):
    admin_client.get(reverse("admin:tasks_admin_alertrule_changelist"))
    rule = AlertRule.objects.get(key="no-beat")
    assert admin_client.get(reverse("admin:tasks_admin_alertrule_add")).status_code == 403
    assert admin_client.post(reverse("admin:tasks_admin_alertrule_delete", args=[rule.pk])).status_code == 403
    assert admin_client.get(reverse("admin:tasks_admin_alert_add")).status_code == 403
    assert not Alert.objects.exists()


def test_the_alert_list_filters_open_alerts_and_a_bad_id_is_not_found(admin_client):
    alerts.rule_rows()
    AlertRule.objects.exclude(key="no-beat").update(enabled=False)
    alerts.evaluate()
    page = admin_client.get(reverse("admin:tasks_admin_alert_changelist") + "?state=open")
    assert page.status_code == 200 and b"No beat has ever held the scheduler lease" in page.content
    resolved = admin_client.get(reverse("admin:tasks_admin_alert_changelist") + "?state=resolved")
    assert b"No beat has ever held" not in resolved.content
    alert = Alert.objects.get()
    detail = admin_client.get(reverse("admin:tasks_admin_alert_change", args=[alert.pk]))
    assert detail.status_code == 200 and b"No beat holds the lease" in detail.content
    assert b"notices" in detail.content and b"opened" in detail.content  # its notice, not yet sent
    assert admin_client.post(reverse("admin:tasks_admin_alert_acknowledge", args=["nope"])).status_code == 404
