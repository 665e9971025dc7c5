"""Batched bookkeeping (tasks_admin/writebehind.py): merged per row, written in one statement,
ordered with the rows written at once, kept through a database error."""

import os
import uuid
from datetime import UTC, datetime

import pytest
from celery import states
from django.db import DataError, OperationalError, connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orders.checkout import Customer, place_order
from orders.models import WorkflowStep
from tasks_admin import writebehind
from tasks_admin.models import PLANNED, TaskRecord
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


# What a batch may set on a task's record: values, NULLs and blanks among them.
FIELDS = {
    "state": st.sampled_from([states.STARTED, states.SUCCESS, states.FAILURE]),
    "worker": st.sampled_from(["", "celery@a", "celery@b"]),
    "finished_at": st.none() | st.datetimes(timezones=st.just(UTC)).map(lambda at: at.replace(microsecond=0)),
    "runtime": st.none() | st.floats(0, 1e6),
    "attempts": st.integers(0, 3),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.fixed_dictionaries({}, optional=FIELDS).filter(bool), min_size=1, max_size=12))
def test_a_batch_writes_what_the_orm_would_row_by_row(batch):
    """Each row sets only its own fields (NULLs and blanks included) and leaves the rest alone,
    whatever the other rows of the batch set; attempts add up."""
    run = uuid.uuid4().hex
    finished = datetime(2026, 12, 6, 12, tzinfo=UTC)
    ours, orms = {}, {}
    for n, fields in enumerate(batch):
        for side, keys in (("ours", ours), ("orm", orms)):
            key = f"{run}-{side}-{n}"
            record(key, worker="celery@old", finished_at=finished, runtime=1.5, attempts=1)
            keys[key] = fields

    assert writebehind.update_rows(TaskRecord, ("task_id",), ours, additive=("attempts",)) == len(batch)
    for key, fields in orms.items():
        TaskRecord.objects.filter(task_id=key).update(
            **{name: F("attempts") + value if name == "attempts" else value for name, value in fields.items()}
        )

    def stored(keys):
        return list(TaskRecord.objects.filter(task_id__in=keys).order_by("id").values(*FIELDS))

    assert stored(ours) == stored(orms)


def test_a_value_too_long_for_its_column_is_treated_as_the_orm_treats_it():
    """Refused on PostgreSQL (and the batch written row by row by the flusher), stored on SQLite,
    which does not check lengths: never cut short."""
    record("long-ours"), record("long-orm")
    worker = "celery@" + "x" * 300

    def outcome(task_id, write):
        try:
            with transaction.atomic():
                write()
        except DataError:
            return "refused"
        return TaskRecord.objects.get(task_id=task_id).worker

    ours = outcome(
        "long-ours", lambda: writebehind.update_rows(TaskRecord, ("task_id",), {"long-ours": {"worker": worker}})
    )
    orm = outcome("long-orm", lambda: TaskRecord.objects.filter(task_id="long-orm").update(worker=worker))
    assert ours == orm and ours in ("refused", worker)


def test_rows_that_do_not_hold_the_required_values_are_left_alone():
    record("planned", state=PLANNED), record("started", state=states.STARTED)

    matched = writebehind.update_rows(
        TaskRecord,
        ("task_id",),
        {"planned": {"state": states.PENDING}, "started": {"state": states.PENDING}},
        only_if={"state": PLANNED},
    )

    assert matched == 1
    assert dict(TaskRecord.objects.values_list("task_id", "state")) == {
        "planned": states.PENDING,
        "started": states.STARTED,
    }


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
