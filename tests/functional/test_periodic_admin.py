"""Periodic tasks in the admin: "Run now" needs its permission, is audited and reaches the broker;
the change page shows the task's recent runs and its next run times."""

import json
import uuid
from datetime import timedelta

import pytest
from celery import states
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django_celery_beat.models import ClockedSchedule, IntervalSchedule, PeriodicTask, PeriodicTasks
from kombu.exceptions import OperationalError as BrokerError

from shop.celery import app as celery_app
from tasks_admin.models import TaskAction, TaskRecord

pytestmark = pytest.mark.django_db

# No worker consumes this queue: what the tests send stays unrun, and is purged afterwards.
QUEUE = "periodic-admin-tests"


@pytest.fixture
def periodic_task(broker_url) -> PeriodicTask:
    task = PeriodicTask.objects.create(
        name="Low stock alert",
        task="shop.tasks.send_low_stock_alert",
        interval=IntervalSchedule.objects.create(every=5, period=IntervalSchedule.MINUTES),
        queue=QUEUE,
        headers=json.dumps({"origin": "admin-test"}),
    )
    yield task
    with celery_app.connection_for_write() as connection:
        connection.default_channel.queue_purge(QUEUE)


def run_url(task: PeriodicTask) -> str:
    return reverse("admin:django_celery_beat_periodictask_run", args=[task.pk])


def change_url(task: PeriodicTask) -> str:
    return reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])


@pytest.fixture
def viewer(client, django_user_model):
    """Staff who may look at periodic tasks but not run them."""
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_periodictask"))
    client.force_login(user)
    return client


def test_a_superuser_runs_it_now_audited_and_sent_to_its_queue_with_its_name(admin_client, admin_user, periodic_task):
    changed_before = PeriodicTasks.last_change()

    response = admin_client.post(run_url(periodic_task))

    assert response.status_code == 302 and response["Location"] == change_url(periodic_task)
    action = TaskAction.objects.get()
    assert (action.kind, action.user, action.periodic_task_name) == (
        TaskAction.Kind.RUN_PERIODIC,
        admin_user,
        "Low stock alert",
    )
    record = TaskRecord.objects.get(task_id=action.new_task_id)
    assert (record.task_name, record.periodic_task_name, record.queue) == (
        "shop.tasks.send_low_stock_alert",
        "Low stock alert",
        QUEUE,
    )
    entry = LogEntry.objects.get(content_type=ContentType.objects.get_for_model(PeriodicTask))
    assert entry.object_id == str(periodic_task.pk) and action.new_task_id in entry.get_change_message()
    periodic_task.refresh_from_db()
    assert periodic_task.total_run_count == 1
    assert periodic_task.last_run_at > timezone.now() - timedelta(minutes=1)
    assert PeriodicTasks.last_change() > changed_before  # beat reloads it and counts from this run


def test_the_list_action_runs_each_selected_task(admin_client, periodic_task):
    response = admin_client.post(
        reverse("admin:django_celery_beat_periodictask_changelist"),
        {"action": "run_tasks", "_selected_action": [periodic_task.pk]},
    )

    assert response.status_code == 302
    action = TaskAction.objects.get(kind=TaskAction.Kind.RUN_PERIODIC)
    assert TaskRecord.objects.filter(task_id=action.new_task_id, periodic_task_name="Low stock alert").exists()


def test_staff_without_the_permission_get_403_and_see_neither_button_nor_action(viewer, periodic_task):
    assert viewer.post(run_url(periodic_task)).status_code == 403

    page = viewer.get(change_url(periodic_task))
    assert page.status_code == 200
    assert 'data-testid="run-now"' not in page.content.decode()
    changelist = viewer.get(reverse("admin:django_celery_beat_periodictask_changelist"))
    assert changelist.status_code == 200
    assert "run_tasks" not in changelist.content.decode()
    # The stock list actions switched tasks on and off for anyone who could see them.
    assert "enable_tasks" not in changelist.content.decode()
    forged = viewer.post(
        reverse("admin:django_celery_beat_periodictask_changelist"),
        {"action": "run_tasks", "_selected_action": [periodic_task.pk]},
    )
    assert forged.status_code == 403
    assert not TaskAction.objects.exists() and not TaskRecord.objects.exists()
    periodic_task.refresh_from_db()
    assert periodic_task.total_run_count == 0


def test_staff_with_the_permission_see_the_button_and_the_action(viewer, periodic_task, django_user_model):
    user = django_user_model.objects.get(username="viewer")
    user.user_permissions.add(Permission.objects.get(codename="run_periodic_task"))

    assert 'data-testid="run-now"' in viewer.get(change_url(periodic_task)).content.decode()
    changelist = viewer.get(reverse("admin:django_celery_beat_periodictask_changelist")).content.decode()
    assert 'value="run_tasks"' in changelist and "Run selected periodic tasks now" in changelist


def test_when_the_broker_is_unreachable_nothing_is_recorded_and_staff_are_told(
    admin_client, periodic_task, monkeypatch
):
    def broker_down(*args, **kwargs):
        raise BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(celery_app, "send_task", broker_down)

    response = admin_client.post(run_url(periodic_task), follow=True)

    assert "The broker could not be reached, nothing was sent" in response.content.decode()
    assert not TaskAction.objects.exists() and not LogEntry.objects.exists()
    periodic_task.refresh_from_db()
    assert (periodic_task.total_run_count, periodic_task.last_run_at) == (0, None)


def test_run_now_is_post_only(admin_client, periodic_task):
    response = admin_client.get(run_url(periodic_task))

    assert response.status_code == 405
    assert not TaskAction.objects.exists()


def test_run_now_needs_the_csrf_token(admin_user, periodic_task):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    assert client.post(run_url(periodic_task)).status_code == 403
    assert not TaskAction.objects.exists()


def record_url(record: TaskRecord) -> str | None:
    try:
        return reverse("admin:tasks_admin_taskrecord_change", args=[record.pk])
    except NoReverseMatch:
        return None


def test_the_change_page_shows_recent_runs_and_the_next_run_times(admin_client, periodic_task):
    now = timezone.now()
    PeriodicTask.objects.filter(pk=periodic_task.pk).update(last_run_at=now - timedelta(minutes=1))
    runs = [
        TaskRecord.objects.create(
            task_id=str(uuid.uuid4()),
            task_name=periodic_task.task,
            periodic_task_name=periodic_task.name,
            state=states.SUCCESS,
            sent_at=now - timedelta(minutes=25 - i),
            finished_at=now - timedelta(minutes=25 - i),
            runtime=0.25,
        )
        for i in range(22)
    ]
    other = TaskRecord.objects.create(
        task_id="other-task", task_name=periodic_task.task, periodic_task_name="Another", sent_at=now
    )

    response = admin_client.get(change_url(periodic_task))

    page = response.content.decode()
    shown = [run["record"] for run in response.context["recent_runs"]]
    assert shown == runs[::-1][:20]  # newest first, 20 of them
    assert runs[-1].task_id in page and runs[0].task_id not in page and other.task_id not in page
    assert "0.250 s" in page and "succeeded" in page
    if url := record_url(runs[-1]):
        assert f'href="{url}"' in page
    next_runs = response.context["next_runs"]
    assert len(next_runs) == 5
    assert next_runs[1] - next_runs[0] == timedelta(minutes=5)
    assert abs(next_runs[0] - (now + timedelta(minutes=4))) < timedelta(seconds=5)
    assert next_runs[0].strftime("%Y-%m-%d %H:%M:%S") in page


def test_a_clocked_task_shows_its_one_off_time(admin_client):
    clocked = ClockedSchedule.objects.create(clocked_time=timezone.now() + timedelta(days=2))
    task = PeriodicTask.objects.create(
        name="once", task="shop.tasks.send_low_stock_alert", clocked=clocked, one_off=True
    )

    page = admin_client.get(change_url(task)).content.decode()

    assert f"One-off at {clocked.clocked_time:%Y-%m-%d %H:%M:%S}" in page


def test_the_add_page_has_no_run_button_or_run_panels(admin_client):
    response = admin_client.get(reverse("admin:django_celery_beat_periodictask_add"))

    page = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="run-now"' not in page and 'data-testid="recent-runs"' not in page
