"""A late duplicate report of a chord header task, racing the removal of its fired chord, leaves no
part behind (tasks_admin/backend.py: a report locks the chord's counter before it records its part;
the removal deletes the counter first). Scenario 7 of the failure-injection suite found one left
in one of eight runs on 2026-12-03: the report saw the counter, the removal deleted the parts and
the counter, and the report's part, no longer in conflict, was inserted for a chord that was gone.
PostgreSQL only (the race is between sessions): .ci/run runs it there."""

import threading
import uuid

import pytest
from django.db import connection, transaction
from django_celery_results.models import ChordCounter

from shop.celery import app
from tasks_admin import backend
from tasks_admin.models import ChordPart
from tests.support import require, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def waiting_for_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def test_a_duplicate_report_racing_the_removal_of_its_fired_chord_leaves_nothing_behind() -> None:
    require(connection.vendor == "postgresql", "the race is between PostgreSQL sessions (DATABASE_URL=postgres://…)")
    group, task = str(uuid.uuid4()), str(uuid.uuid4())
    ChordCounter.objects.create(group_id=group, sub_tasks="[]", count=0)  # fired: every report counted
    ChordPart.objects.create(group_id=group, task_id=task, state="SUCCESS")
    removing, release = threading.Event(), threading.Event()
    outcome: list[int | str] = []

    def remove() -> None:  # the write-behind of a worker that fired the chord, not committed yet
        try:
            with transaction.atomic():
                backend._forget_chords({group: {}})
                removing.set()
                release.wait(30)
        finally:
            connection.close()

    def report() -> None:  # the same header task, delivered twice, reporting again
        try:
            outcome.append(app.backend._count_part(group, task, "SUCCESS"))
        finally:
            connection.close()

    remover, reporter = threading.Thread(target=remove), threading.Thread(target=report)
    remover.start()
    try:
        assert removing.wait(30)
        reporter.start()
        wait_for(waiting_for_a_lock, timeout=10, message="the report waiting for the removal")
    finally:
        release.set()
        remover.join(30)
    reporter.join(30)

    assert outcome == ["not counted"]
    assert not ChordCounter.objects.filter(group_id=group).exists()
    assert not ChordPart.objects.filter(group_id=group).exists()
