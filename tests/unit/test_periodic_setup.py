"""Installing the default schedules (never over staff edits) and previewing next run times."""

import json
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask

from tasks_admin.periodic import next_run_times

pytestmark = pytest.mark.django_db

EXPECTED = {
    "Cancel stale orders": ("orders.tasks.cancel_stale_orders", "every 5 minutes"),
    "Recover stuck workflows": ("orders.tasks.recover_stuck_workflows", "every 2 minutes"),
    "Low stock alert": ("shop.tasks.send_low_stock_alert", "every hour"),
    "Daily sales report": ("orders.tasks.build_daily_sales_report", "15 0 * * * (m/h/dM/MY/d) UTC"),
    "Clean up task history": ("tasks_admin.tasks.cleanup_task_history", "30 3 * * * (m/h/dM/MY/d) UTC"),
    "Evaluate alert rules": ("tasks_admin.tasks.evaluate_alerts", "every minute"),
}
NOW = datetime(2026, 6, 1, 12, 0, 7, tzinfo=UTC)


def setup_periodic_tasks() -> str:
    out = StringIO()
    call_command("setup_periodic_tasks", stdout=out)
    return out.getvalue()


def test_the_default_schedules_are_created():
    output = setup_periodic_tasks()

    tasks = {t.name: (t.task, str(t.interval or t.crontab)) for t in PeriodicTask.objects.all()}
    assert tasks == EXPECTED
    assert all(json.loads(t.kwargs) == {} and t.enabled for t in PeriodicTask.objects.all())
    assert output.count("Created periodic task") == 6


def test_running_it_again_keeps_staff_edits_and_recreates_only_what_is_missing():
    setup_periodic_tasks()
    edited = PeriodicTask.objects.get(name="Cancel stale orders")
    edited.interval = IntervalSchedule.objects.create(every=15, period=IntervalSchedule.MINUTES)
    edited.enabled = False
    edited.kwargs = '{"note": "staff"}'
    edited.save()
    PeriodicTask.objects.filter(name="Low stock alert").delete()

    output = setup_periodic_tasks()

    edited.refresh_from_db()
    assert (edited.interval.every, edited.enabled, edited.kwargs) == (15, False, '{"note": "staff"}')
    assert PeriodicTask.objects.count() == 6
    assert "Created periodic task: Low stock alert" in output
    assert "Kept periodic task as it is: Cancel stale orders" in output
    # Equal schedules are reused, not duplicated.
    assert IntervalSchedule.objects.filter(every=5, period=IntervalSchedule.MINUTES).count() == 1
    assert CrontabSchedule.objects.filter(minute="15", hour="0").count() == 1


def interval_task(**fields) -> PeriodicTask:
    schedule = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.MINUTES)
    return PeriodicTask.objects.create(
        name="every five", task="shop.tasks.send_low_stock_alert", interval=schedule, **fields
    )


def test_an_interval_task_runs_every_interval_after_its_last_run():
    task = interval_task(last_run_at=NOW - timedelta(minutes=2))

    assert next_run_times(task, now=NOW) == [NOW + timedelta(minutes=3 + 5 * i) for i in range(5)]


def test_an_overdue_task_runs_at_once():
    task = interval_task(last_run_at=NOW - timedelta(hours=2))

    assert next_run_times(task, now=NOW)[:2] == [NOW, NOW + timedelta(minutes=5)]


def test_a_crontab_task_runs_at_its_next_matching_times():
    schedule = CrontabSchedule.objects.create(minute="15", hour="0", timezone="UTC")
    task = PeriodicTask.objects.create(
        name="daily",
        task="orders.tasks.build_daily_sales_report",
        crontab=schedule,
        last_run_at=NOW - timedelta(hours=11),
    )

    assert next_run_times(task, now=NOW) == [datetime(2026, 6, d, 0, 15, tzinfo=UTC) for d in range(2, 7)]


def test_start_time_one_off_expiry_and_disabled_tasks_are_taken_into_account():
    starts = interval_task(start_time=NOW + timedelta(days=1))
    assert next_run_times(starts, now=NOW)[0] == NOW + timedelta(days=1)

    starts.one_off = True
    assert next_run_times(starts, now=NOW) == [NOW + timedelta(days=1)]

    starts.one_off, starts.start_time, starts.last_run_at = False, None, NOW
    starts.expires = NOW + timedelta(minutes=12)
    assert next_run_times(starts, now=NOW) == [NOW + timedelta(minutes=5), NOW + timedelta(minutes=10)]

    starts.enabled = False
    assert next_run_times(starts, now=NOW) == []


def test_a_clocked_task_is_not_previewed_as_a_series():
    clocked = ClockedSchedule.objects.create(clocked_time=NOW + timedelta(hours=1))
    task = PeriodicTask.objects.create(
        name="once", task="shop.tasks.send_low_stock_alert", clocked=clocked, one_off=True
    )

    assert next_run_times(task, now=NOW) == []
