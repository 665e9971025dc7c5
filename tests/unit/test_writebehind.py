"""Batched bookkeeping (tasks_admin/writebehind.py): merged per row, written in one statement,
ordered with the rows written at once, kept through a database error."""

import os

import pytest
from celery import states
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from orders.checkout import Customer, place_order
from orders.models import WorkflowStep
from tasks_admin import writebehind
from tasks_admin.models import TaskRecord
from tests.factories import GOOD_CARD, make_product

pytestmark = pytest.mark.django_db


def history_table() -> writebehind.Table:
    return writebehind.Table(
        "test runs", lambda rows: writebehind.update_rows(TaskRecord, ("task_id",), rows, ("attempts",)), ("attempts",)
    )


def record(task_id: str, **fields) -> TaskRecord:
    return TaskRecord.objects.create(task_id=task_id, task_name="t", sent_at=timezone.now(), **fields)


@pytest.fixture
def batching(monkeypatch):
    """This process batches, as a worker's pool process does (no flusher thread: tests flush)."""
    monkeypatch.setattr(writebehind, "_enabled_pid", os.getpid())
    for table in writebehind._tables:
        monkeypatch.setattr(table, "_rows", {})


def test_many_rows_are_written_in_one_update_with_additive_columns_added():
    a, b = record("a", attempts=1), record("b", attempts=5)
    started = timezone.now()

    with CaptureQueriesContext(connection) as queries:
        matched = writebehind.update_rows(
            TaskRecord,
            ("task_id",),
            {"a": {"state": states.SUCCESS, "attempts": 1, "started_at": started}, "b": {"attempts": 2}},
            additive=("attempts",),
        )

    assert matched == 2 and len(queries) == 1
    a.refresh_from_db(), b.refresh_from_db()
    assert (a.state, a.attempts, a.started_at) == (states.SUCCESS, 2, started)
    assert (b.state, b.attempts, b.started_at) == (states.PENDING, 7, None)  # untouched columns stay


def test_rows_keyed_on_several_columns_are_updated_by_their_whole_key():
    order = place_order(
        customer=Customer("Ada", "ada@example.com", "+442079460000"),
        shipping_address="x",
        items=[(make_product().sku, 1)],
        card_number=GOOD_CARD,
    )
    key = (str(order.pk), "record_sales")

    writebehind.update_rows(WorkflowStep, ("order_id", "name"), {key: {"state": states.SUCCESS, "error": ""}})

    assert dict(order.steps.values_list("name", "state"))["record_sales"] == states.SUCCESS
    assert order.steps.filter(state=states.SUCCESS).count() == 1


def test_a_batching_process_merges_a_row_until_the_flush(batching):
    record("t1")
    runs = history_table()
    try:
        runs.put("t1", state=states.STARTED, attempts=1)
        runs.put("t1", state=states.SUCCESS)
        runs.put("t1", attempts=1)
        assert TaskRecord.objects.get(task_id="t1").state == states.PENDING  # nothing written yet

        with CaptureQueriesContext(connection) as queries:
            writebehind.flush()

        assert (TaskRecord.objects.get(task_id="t1").state, TaskRecord.objects.get(task_id="t1").attempts) == (
            states.SUCCESS,
            2,
        )
        assert len(queries) == 1
    finally:
        writebehind._tables.remove(runs)


def test_a_row_written_at_once_takes_what_is_pending_and_no_later_batch_overwrites_it(batching):
    record("t2")
    runs = history_table()
    try:
        runs.put("t2", state=states.STARTED, attempts=1)
        runs.write_now("t2", state=states.FAILURE, exception_type="Boom")
        writebehind.flush()  # nothing left for t2

        failed = TaskRecord.objects.get(task_id="t2")
        assert (failed.state, failed.attempts, failed.exception_type) == (states.FAILURE, 1, "Boom")
    finally:
        writebehind._tables.remove(runs)


def test_a_batch_the_database_refused_is_written_by_the_next_flush(batching, monkeypatch):
    record("t3")
    calls = []

    def write(rows):
        calls.append(dict(rows))
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        writebehind.update_rows(TaskRecord, ("task_id",), rows, ("attempts",))

    runs = writebehind.Table("test runs", write, ("attempts",))
    monkeypatch.setattr(connection, "close", lambda: None)  # keep the test's transaction
    try:
        runs.put("t3", state=states.STARTED, attempts=1)
        writebehind.flush()
        runs.put("t3", state=states.SUCCESS, attempts=1)  # recorded meanwhile
        writebehind.flush()

        stored = TaskRecord.objects.get(task_id="t3")
        assert (stored.state, stored.attempts) == (states.SUCCESS, 2)
        assert calls[1] == {"t3": {"state": states.SUCCESS, "attempts": 2}}
    finally:
        writebehind._tables.remove(runs)


@pytest.mark.django_db(transaction=True)  # in autocommit, as the flusher thread writes
def test_a_row_the_database_refuses_is_dropped_and_the_rest_of_its_batch_is_written(batching):
    """A refused row (a constraint) would otherwise block the whole table's batches for ever."""
    record("good")
    refused = TaskRecord.objects.create(task_id="refused", task_name="t", sent_at=timezone.now())

    def write(rows):
        for key in rows:
            if key == "refused":
                TaskRecord.objects.create(task_id="good", task_name="t", sent_at=timezone.now())  # unique: refused
        writebehind.update_rows(TaskRecord, ("task_id",), rows, ("attempts",))

    runs = writebehind.Table("test runs", write, ("attempts",))
    try:
        runs.put("good", state=states.SUCCESS, attempts=1)
        runs.put("refused", state=states.SUCCESS, attempts=1)
        writebehind.flush()
        writebehind.flush()  # nothing left over to retry

        assert TaskRecord.objects.get(task_id="good").state == states.SUCCESS
        assert TaskRecord.objects.get(pk=refused.pk).state == states.PENDING
        assert runs._rows == {}
    finally:
        writebehind._tables.remove(runs)


def test_outside_a_worker_every_record_is_written_at_once():
    record("t4")
    runs = history_table()
    try:
        runs.put("t4", state=states.SUCCESS)
        assert TaskRecord.objects.get(task_id="t4").state == states.SUCCESS
    finally:
        writebehind._tables.remove(runs)


def test_a_task_run_again_is_recorded_at_once():
    class Request:
        retries, delivery_info = 0, {}

    first, retried, redelivered = Request(), Request(), Request()
    retried.retries = 1
    redelivered.delivery_info = {"redelivered": True}

    assert [writebehind.run_again(r) for r in (first, retried, redelivered)] == [False, True, True]
