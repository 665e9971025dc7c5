"""Deleting old task history: in batches, keeping dead letters, recent rows and live chords."""

import json
import uuid
from datetime import timedelta

import pytest
from celery import states
from celery.result import AsyncResult
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_results.models import ChordCounter, GroupResult, TaskResult

from tasks_admin import cleanup
from tasks_admin.models import PLANNED, ChordPart, TaskAction, TaskRecord

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def seven_days(settings):
    settings.TASK_HISTORY_DAYS = 7


def ago(**delta) -> timezone.datetime:
    return timezone.now() - timedelta(**delta)


def result(*, days_ago: float, task_id: str = "") -> TaskResult:
    row = TaskResult.objects.create(task_id=task_id or str(uuid.uuid4()), status=states.SUCCESS)
    TaskResult.objects.filter(pk=row.pk).update(date_done=ago(days=days_ago))  # date_done is auto_now
    return row


def record(*, state: str = states.SUCCESS, sent: timedelta, finished: timedelta | None = None, **fields) -> TaskRecord:
    return TaskRecord.objects.create(
        task_id=fields.pop("task_id", None) or str(uuid.uuid4()),
        task_name="orders.tasks.charge_payment",
        state=state,
        sent_at=timezone.now() - sent,
        finished_at=timezone.now() - finished if finished is not None else None,
        **fields,
    )


def chord_counter(*task_ids: str) -> ChordCounter:
    sub_tasks = json.dumps([AsyncResult(task_id).as_tuple() for task_id in task_ids])  # as django-celery-results
    return ChordCounter.objects.create(group_id=str(uuid.uuid4()), sub_tasks=sub_tasks, count=len(task_ids))


def test_results_and_records_finished_before_the_cutoff_are_deleted_the_rest_kept():
    old_result, new_result = result(days_ago=8), result(days_ago=6)
    old_group = GroupResult.objects.create(group_id="g-old", result="[]")
    GroupResult.objects.filter(pk=old_group.pk).update(date_done=ago(days=8))
    new_group = GroupResult.objects.create(group_id="g-new", result="[]")
    old_done = record(sent=timedelta(days=9), finished=timedelta(days=8))
    old_declined = record(
        state=states.FAILURE, expected_failure=True, sent=timedelta(days=9), finished=timedelta(days=8)
    )
    old_resolved = record(
        state=states.FAILURE, resolved_at=ago(days=8), sent=timedelta(days=9), finished=timedelta(days=8)
    )
    dead_letter = record(state=states.FAILURE, sent=timedelta(days=30), finished=timedelta(days=30))
    dead_letter_result = result(days_ago=30, task_id=dead_letter.task_id)
    never_finished = record(state=states.PENDING, sent=timedelta(days=30))
    recent = record(sent=timedelta(days=2), finished=timedelta(days=2))
    action = TaskAction.objects.create(kind=TaskAction.Kind.RETRY, task=old_done)

    deleted = cleanup.cleanup_task_history()

    assert deleted == {"task_results": 1, "group_results": 1, "task_records": 3, "chord_counters": 0}
    assert set(TaskResult.objects.all()) == {new_result, dead_letter_result}
    assert not TaskResult.objects.filter(pk=old_result.pk).exists()
    assert list(GroupResult.objects.all()) == [new_group]
    assert set(TaskRecord.objects.all()) == {dead_letter, never_finished, recent}
    assert {old_declined.pk, old_resolved.pk}.isdisjoint(TaskRecord.objects.values_list("pk", flat=True))
    action.refresh_from_db()
    assert action.task is None  # the audit trail stays


def test_rows_are_deleted_in_batches_of_the_given_size():
    for _ in range(5):
        result(days_ago=10)
        record(sent=timedelta(days=10), finished=timedelta(days=10))

    with CaptureQueriesContext(connection) as queries:
        deleted = cleanup.cleanup_task_history(batch_size=2)

    assert (deleted["task_results"], deleted["task_records"]) == (5, 5)
    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
    assert len([sql for sql in deletes if "django_celery_results_taskresult" in sql]) == 3
    assert len([sql for sql in deletes if "tasks_admin_taskrecord" in sql]) == 3
    assert not TaskResult.objects.exists() and not TaskRecord.objects.exists()


def test_orphaned_chord_counters_are_deleted_live_ones_kept():
    never_sent = chord_counter(str(uuid.uuid4()), str(uuid.uuid4()))
    finished_long_ago = chord_counter(
        record(sent=timedelta(hours=3), finished=timedelta(hours=3)).task_id,
        record(state=states.FAILURE, sent=timedelta(hours=3), finished=timedelta(hours=2)).task_id,
    )
    one_still_queued = chord_counter(
        record(sent=timedelta(hours=3), finished=timedelta(hours=3)).task_id,
        record(state=states.PENDING, sent=timedelta(hours=3)).task_id,
    )
    one_retrying = chord_counter(record(state=states.RETRY, sent=timedelta(hours=3)).task_id)
    # A planned chord (its counter written with the canvas) whose header waits for a slow step.
    waiting = chord_counter(record(state=PLANNED, sent=timedelta(hours=3)).task_id)
    sent_lately = chord_counter(record(state=states.SUCCESS, sent=timedelta(minutes=10), finished=timedelta()).task_id)
    unreadable = ChordCounter.objects.create(group_id="g-bad", sub_tasks="not json", count=1)
    for counter in (finished_long_ago, one_still_queued):  # a header task's report of each
        ChordPart.objects.create(group_id=counter.group_id, task_id=str(uuid.uuid4()), state=states.SUCCESS)

    deleted = cleanup.cleanup_task_history()

    assert deleted["chord_counters"] == 3
    assert set(ChordCounter.objects.all()) == {one_still_queued, one_retrying, waiting, sent_lately}
    assert {never_sent.pk, finished_long_ago.pk, unreadable.pk}.isdisjoint(
        ChordCounter.objects.values_list("pk", flat=True)
    )
    # An orphaned counter's reports go with it; a live chord keeps its own.
    assert list(ChordPart.objects.values_list("group_id", flat=True)) == [one_still_queued.group_id]
