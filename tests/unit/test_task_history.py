"""Task history bookkeeping that needs no worker: argument encoding, restoring revokes, waiting and
not-run tasks."""

import datetime as dt
import os
import uuid
from decimal import Decimal

import pytest
from celery import current_app, states
from celery.exceptions import Ignore
from celery.worker.state import revoked
from django.utils import timezone

from orders import tasks
from orders.payments import PaymentDeclined
from tasks_admin import history, writebehind
from tasks_admin import services as task_services
from tasks_admin.history import decode_arguments, encode_arguments, record_failure, restore_revoked
from tasks_admin.models import PLANNED, SKIPPED, DeadLetter, TaskAction, TaskRecord


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


# Truthful history: waiting (PLANNED) until sent, not run (SKIPPED) when the workflow stops.


@pytest.fixture
def recording(monkeypatch):
    """The history's batched writes, enabled in this process (a worker's)."""
    monkeypatch.setattr(writebehind, "_enabled_pid", os.getpid())


def run_ignored(record: TaskRecord, reason: str) -> None:
    """A worker ran the task and it raised Ignore(reason), as the base task and the steps' guards do."""
    task = current_app.tasks["orders.tasks.create_shipment"]
    task.push_request(id=record.task_id, hostname="w@h")
    try:
        history.record_started(record.task_id, task, [], {})
        history.record_finished(record.task_id, task, state=states.IGNORED, retval=Ignore(reason))
    finally:
        task.pop_request()
    writebehind.flush()
    record.refresh_from_db()


@pytest.mark.django_db
def test_a_task_staff_revoked_that_reached_a_worker_anyway_stays_revoked(recording):
    record = make_record(states.REVOKED)

    run_ignored(record, history.REVOKED_BY_STAFF)

    assert (record.state, record.exception_message) == (states.REVOKED, history.REVOKED_BY_STAFF)


@pytest.mark.django_db
def test_a_revoked_step_its_order_refused_stays_revoked_even_after_its_start_was_written(recording, admin_user):
    record = make_record(states.REVOKED)
    task_services.audit(TaskAction.Kind.REVOKE, admin_user, "", record, message="Revoked")
    TaskRecord.objects.filter(pk=record.pk).update(state=states.STARTED)  # a batch of its start, written since

    run_ignored(record, "Order SO-1 is On hold: not shipping it.")

    assert (record.state, record.exception_message) == (states.REVOKED, "Order SO-1 is On hold: not shipping it.")


@pytest.mark.django_db
def test_a_step_its_order_refused_is_recorded_as_not_run_with_the_reason(recording):
    record = make_record(states.PENDING)

    run_ignored(record, "Order SO-1 is Cancelled: not shipping it.")

    assert (record.state, record.exception_message) == (SKIPPED, "Order SO-1 is Cancelled: not shipping it.")
    assert record.get_state_display() == "not run"
    assert not DeadLetter.objects.exists()


@pytest.mark.django_db
def test_skipping_marks_only_the_tasks_that_have_not_started():
    records = {state: make_record(state) for state in (PLANNED, states.PENDING, states.STARTED, states.SUCCESS)}

    assert history.skip([r.task_id for r in records.values()], "not run: order cancelled") == 2

    after = {state: TaskRecord.objects.get(pk=r.pk) for state, r in records.items()}
    assert {state: r.state for state, r in after.items()} == {
        PLANNED: SKIPPED,
        states.PENDING: SKIPPED,
        states.STARTED: states.STARTED,  # running: it ends as it ends
        states.SUCCESS: states.SUCCESS,
    }
    assert after[PLANNED].exception_message == "not run: order cancelled"


@pytest.mark.django_db
def test_a_waiting_task_is_queued_once_a_worker_sends_it_on_and_not_after_it_started(recording):
    waiting, started = make_record(PLANNED), make_record(PLANNED)
    TaskRecord.objects.filter(pk=started.pk).update(state=states.STARTED)  # its worker wrote first
    for record in (waiting, started):
        history.record_published(
            sender="orders.tasks.create_shipment",
            body=([], {}, {}),
            exchange="",
            routing_key="celery",
            headers={"id": record.task_id, history.RECORDED_HEADER: True},
            properties={},
        )
    writebehind.flush()

    assert TaskRecord.objects.get(pk=waiting.pk).state == states.PENDING
    assert TaskRecord.objects.get(pk=started.pk).state == states.STARTED
    assert TaskRecord.objects.count() == 2  # recorded by the checkout: publishing adds no row


@pytest.mark.django_db
def test_a_revoked_task_is_known_to_the_base_task_as_revoked():
    revoked_record, queued = make_record(states.REVOKED), make_record(states.PENDING)

    assert history.is_revoked(revoked_record.task_id) is True
    assert history.is_revoked(queued.task_id) is False
    assert history.is_revoked("unknown") is False


@pytest.mark.django_db
def test_a_run_redelivered_after_it_ended_is_counted_again_when_it_ends(recording):
    """/metrics counts runs (tasks_admin/tally.py): one already folded into the tally is unmarked
    when it starts again, and folded again when it ends; a first run leaves the mark alone."""
    task = current_app.tasks["orders.tasks.create_shipment"]
    first, again = make_record(states.SUCCESS), make_record(states.FAILURE)
    TaskRecord.objects.filter(pk__in=[first.pk, again.pk]).update(tallied=True)
    for record, redelivered in ((first, False), (again, True)):
        task.push_request(id=record.task_id, hostname="w@h", delivery_info={"redelivered": redelivered})
        try:
            history.record_started(record.task_id, task, [], {})
        finally:
            task.pop_request()
    writebehind.flush()

    assert TaskRecord.objects.get(pk=first.pk).tallied is True
    assert TaskRecord.objects.get(pk=again.pk).tallied is False
