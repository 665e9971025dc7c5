"""Chords through the shop's result backend (tasks_admin/backend.py) with a real worker: a header
entry that is a chain ending in a group (Celery's test_nested_chord_group_chain_group_tail)."""

from celery import chain, chord, group, states
from django_celery_results.models import TaskResult

from tasks_admin.models import TaskRecord
from tests.fakes import tasks as fake_tasks
from tests.support import wait_for


def test_a_chord_waits_for_every_task_of_a_group_at_the_end_of_a_header_chain(worker):
    # One header entry, three reports (a, then b and c). Counted by entries, the callback ran after
    # b's report and c's drove the counter below zero: c, whose work succeeded, was stored FAILURE.
    step = fake_tasks.sleep_for
    header = [chain(step.si(0.1), group(step.si(0.2), step.si(0.4)))]
    chord(header, fake_tasks.record_arguments.si("nested-chord")).delay()

    wait_for(lambda: fake_tasks.received("nested-chord"), message="the chord's callback")
    runs = TaskRecord.objects.filter(task_name=step.name).values("task_id")
    results = TaskResult.objects.filter(task_id__in=runs)
    wait_for(lambda: results.count() == 3, message="the header tasks' results")
    assert set(results.values_list("status", flat=True)) == {states.SUCCESS}
    # The callback ran once, after the last header task: by then every report was counted.
    callbacks = TaskRecord.objects.filter(task_name=fake_tasks.record_arguments.name)
    callback = wait_for(lambda: callbacks.filter(started_at__isnull=False).first(), message="the callback's history")
    assert callbacks.count() == 1
    assert callback.started_at >= results.latest("date_done").date_done
