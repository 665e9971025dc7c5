"""Task history bookkeeping that needs no worker: argument encoding, restoring revokes."""

import datetime as dt
import os
import uuid
from decimal import Decimal

import pytest
from celery import current_app, states
from celery.worker.state import revoked
from django.utils import timezone

from orders import tasks
from orders.payments import PaymentDeclined
from tasks_admin import history, writebehind
from tasks_admin.history import decode_arguments, encode_arguments, record_failure, restore_revoked
from tasks_admin.models import DeadLetter, TaskRecord


def test_arguments_are_stored_as_json_and_decoded_to_the_same_types():
    value = [
        Decimal("0.10"),
        dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
        dt.date(2026, 2, 3),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        {"nested": [Decimal("1E+2"), "x" * 10_000]},
    ]
    stored = encode_arguments(value)

    assert stored[0] == {"__type__": "decimal", "__value__": "0.10"}
    decoded = decode_arguments(stored)
    assert decoded == value
    assert [type(v) for v in decoded] == [Decimal, dt.datetime, dt.date, uuid.UUID, dict]
    assert str(decoded[4]["nested"][0]) == "1E+2"  # not merely equal: the same Decimal


def make_record(state: str, **fields) -> TaskRecord:
    return TaskRecord.objects.create(
        task_id=str(uuid.uuid4()), task_name="t", state=state, sent_at=timezone.now(), **fields
    )


@pytest.mark.django_db
def test_a_worker_starting_later_learns_the_recent_revokes():
    queued = make_record(states.REVOKED)
    ran = make_record(states.REVOKED, started_at=timezone.now())
    old = make_record(states.REVOKED)
    TaskRecord.objects.filter(pk=old.pk).update(sent_at=timezone.now() - dt.timedelta(days=3))
    revoked.clear()

    restore_revoked()

    assert queued.task_id in revoked
    assert ran.task_id not in revoked and old.task_id not in revoked


@pytest.mark.django_db
def test_a_failure_the_task_declares_is_recorded_but_is_no_dead_letter():
    declined, broken = make_record(states.STARTED), make_record(states.STARTED)

    record_failure(tasks.charge_payment, declined.task_id, PaymentDeclined("declined"))
    record_failure(tasks.charge_payment, broken.task_id, RuntimeError("bug"))

    declined.refresh_from_db()
    assert (declined.state, declined.exception_type, declined.expected_failure) == (
        states.FAILURE,
        "PaymentDeclined",
        True,
    )
    assert list(DeadLetter.objects.values_list("pk", flat=True)) == [broken.pk]


@pytest.mark.django_db
def test_a_task_no_process_recorded_when_it_was_sent_is_recorded_when_it_runs(monkeypatch):
    # Sent by another app or a shell: its start and end arrive in the worker's batch, unknown.
    monkeypatch.setattr(writebehind, "_enabled_pid", os.getpid())
    task = current_app.tasks["orders.tasks.record_sales"]
    task.push_request(id="unsent-1", delivery_info={"routing_key": "celery"}, group="g-1", hostname="w@h")
    try:
        history.record_started("unsent-1", task, ["not-an-order"], {})
        history.record_finished("unsent-1", task, state=states.SUCCESS)
    finally:
        task.pop_request()
    writebehind.flush()

    record = TaskRecord.objects.get(task_id="unsent-1")
    assert (record.task_name, record.state, record.attempts, record.group_id) == (task.name, states.SUCCESS, 1, "g-1")
    assert record.args == ["not-an-order"] and record.queue == "celery" and record.finished_at is not None
