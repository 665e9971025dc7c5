"""The result backend's bookkeeping under redelivery and database outages (no worker needed)."""

import time
import uuid
from types import SimpleNamespace

import pytest
from celery import states
from celery.canvas import Signature
from django.db import OperationalError
from django_celery_results.models import ChordCounter, TaskResult

from orders import tasks
from shop.celery import app
from tasks_admin.backend import ShopDatabaseBackend, planned_chord
from tasks_admin.cleanup import header_task_ids
from tasks_admin.models import ChordPart


@pytest.mark.django_db
def test_a_chord_sent_again_by_a_chain_step_run_twice_keeps_its_one_counter():
    # A redelivered create_shipment sends the workflow's chord again: a second INSERT of the
    # same group used to raise IntegrityError, failing the step and stopping the order.
    backend = ShopDatabaseBackend(app=app)
    header = app.GroupResult(str(uuid.uuid4()), [app.AsyncResult(str(uuid.uuid4())) for _ in range(3)])
    callback = tasks.confirm_order.si(str(uuid.uuid4()))

    backend.apply_chord(header, callback)
    backend.apply_chord(header, callback)

    assert list(ChordCounter.objects.filter(group_id=header.id).values_list("count", flat=True)) == [3]


@pytest.mark.django_db(transaction=True)
def test_a_result_write_rides_out_a_blip_and_gives_up_on_an_outage_instead_of_failing_the_task(monkeypatch, settings):
    settings.RESULT_WRITE_RETRY_SECONDS = 0.3
    backend = ShopDatabaseBackend(app=app)
    store = backend._store_result
    calls = []

    def unreachable_at_first(*args, **kwargs):
        calls.append(args[0])
        if len(calls) < 3:
            raise OperationalError("connection refused")
        return store(*args, **kwargs)

    monkeypatch.setattr(backend, "_store_result", unreachable_at_first)
    backend.store_result("blip", 42, states.SUCCESS)
    assert TaskResult.objects.get(task_id="blip").status == states.SUCCESS

    def unreachable(*args, **kwargs):
        calls.append(args[0])
        raise OperationalError("connection refused")

    monkeypatch.setattr(backend, "_store_result", unreachable)
    started = time.monotonic()
    backend.store_result("outage", 42, states.SUCCESS)  # logged and dropped: no exception

    assert time.monotonic() - started < 2
    assert calls.count("outage") > 1  # it was retried before giving up
    assert not TaskResult.objects.filter(task_id="outage").exists()


def header_report(group_id: str, task_id: str, callback) -> SimpleNamespace:
    """The request a header task's result is stored with (what on_chord_part_return reads)."""
    return SimpleNamespace(group=group_id, id=task_id, chord=dict(callback))


@pytest.mark.django_db(transaction=True)
def test_a_chord_whose_header_task_failed_records_the_callback_as_failed_with_its_cause():
    # Reported outside an `except` block, this raised AttributeError in the last header task
    # (no traceback to record), which turned a successful record_sales into a dead letter.
    backend = ShopDatabaseBackend(app=app)
    ok, broken = str(uuid.uuid4()), str(uuid.uuid4())
    header = app.GroupResult(str(uuid.uuid4()), [app.AsyncResult(ok), app.AsyncResult(broken)])
    callback = tasks.confirm_order.si(str(uuid.uuid4())).set(task_id=str(uuid.uuid4()))
    backend.apply_chord(header, callback)

    backend.on_chord_part_return(header_report(header.id, broken, callback), states.FAILURE, RuntimeError("x"))
    backend.on_chord_part_return(header_report(header.id, ok, callback), states.SUCCESS, 1)

    failed = TaskResult.objects.get(task_id=callback.id)
    assert failed.status == states.FAILURE
    assert "ChordError" in failed.result and broken in failed.result
    assert not ChordCounter.objects.exists() and not ChordPart.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_header_task_reported_again_after_its_chord_fired_leaves_nothing_behind(monkeypatch):
    backend = ShopDatabaseBackend(app=app)
    fired = []
    monkeypatch.setattr(backend, "_fire", lambda request, group_id: fired.append(group_id))
    only = str(uuid.uuid4())
    header = app.GroupResult(str(uuid.uuid4()), [app.AsyncResult(only)])
    callback = tasks.confirm_order.si(str(uuid.uuid4()))
    backend.apply_chord(header, callback)

    backend.on_chord_part_return(header_report(header.id, only, callback), states.SUCCESS, 1)
    ChordCounter.objects.all().delete()  # what _fire does once the callback is sent
    ChordPart.objects.all().delete()
    backend.on_chord_part_return(header_report(header.id, only, callback), states.SUCCESS, 1)  # redelivered

    assert fired == [header.id]
    assert not ChordPart.objects.exists()


def counter_of(group_id: str) -> int:
    return ChordCounter.objects.get(group_id=group_id).count


@pytest.mark.django_db(transaction=True)
def test_a_header_entry_that_ends_in_a_group_counts_each_of_its_tasks(monkeypatch):
    # chord([chain(a, group(b, c))], callback): one header entry, two reports. Celery sets the
    # real size (set_chord_size) while sending the header; without it the callback fired on
    # b's report, and c's drove the counter below zero (its result then stored as FAILURE).
    backend = ShopDatabaseBackend(app=app)
    fired = []
    monkeypatch.setattr(backend, "_fire", lambda request, group_id: fired.append(group_id))
    entry, b, c, stray = (str(uuid.uuid4()) for _ in range(4))
    header = app.GroupResult(str(uuid.uuid4()), [app.AsyncResult(entry)])
    callback = tasks.confirm_order.si(str(uuid.uuid4()))
    backend.apply_chord(header, callback)
    backend.set_chord_size(header.id, 2)
    assert counter_of(header.id) == 2

    backend.on_chord_part_return(header_report(header.id, b, callback), states.SUCCESS, 1)
    assert fired == [] and counter_of(header.id) == 1
    backend.on_chord_part_return(header_report(header.id, c, callback), states.SUCCESS, 1)
    assert fired == [header.id] and counter_of(header.id) == 0
    # One report too many (a size Celery got wrong) is not counted: the counter stays at zero.
    backend.on_chord_part_return(header_report(header.id, stray, callback), states.SUCCESS, 1)
    assert fired == [header.id] and counter_of(header.id) == 0


@pytest.mark.django_db(transaction=True)
def test_the_size_of_a_chord_sent_again_counts_the_reports_already_made(monkeypatch):
    # A redelivered chain step sends its chord again, from another process: the counter is kept,
    # and the real size less the distinct reports already counted is what remains.
    first, second = ShopDatabaseBackend(app=app), ShopDatabaseBackend(app=app)
    monkeypatch.setattr(first, "_fire", lambda request, group_id: None)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    header = app.GroupResult(str(uuid.uuid4()), [app.AsyncResult(ids[0])])
    callback = tasks.confirm_order.si(str(uuid.uuid4()))
    first.apply_chord(header, callback)
    first.set_chord_size(header.id, 3)
    first.on_chord_part_return(header_report(header.id, ids[0], callback), states.SUCCESS, 1)

    second.apply_chord(header, callback)
    second.set_chord_size(header.id, 3)

    assert counter_of(header.id) == 2


@pytest.mark.django_db(transaction=True)
def test_a_callback_that_cannot_be_sent_is_a_callback_error_not_the_header_tasks(monkeypatch):
    # A callback refused for a reason other than the broker being away (a missing queue, a bad
    # argument): like django-celery-results, the callback is recorded as failed, and the last
    # header task, which succeeded, is not blamed (on_chord_part_return used to raise in it).
    backend = ShopDatabaseBackend(app=app)
    only = str(uuid.uuid4())
    header = app.GroupResult(str(uuid.uuid4()), [app.AsyncResult(only)])
    callback = tasks.confirm_order.si(str(uuid.uuid4())).set(task_id=str(uuid.uuid4()))
    backend.apply_chord(header, callback)

    def refused(self, *args, **kwargs):
        raise ValueError("queue 'nowhere' not found")

    monkeypatch.setattr(Signature, "apply_async", refused)
    backend.on_chord_part_return(header_report(header.id, only, callback), states.SUCCESS, 1)

    failed = TaskResult.objects.get(task_id=callback.id)
    assert failed.status == states.FAILURE
    assert "Callback error" in failed.result and "nowhere" in failed.result


@pytest.mark.django_db(transaction=True)
def test_a_chord_failed_by_a_header_task_carries_the_tasks_exception():
    backend = ShopDatabaseBackend(app=app)
    broken = str(uuid.uuid4())
    header = app.GroupResult(str(uuid.uuid4()), [app.AsyncResult(broken), app.AsyncResult(str(uuid.uuid4()))])
    callback = tasks.confirm_order.si(str(uuid.uuid4())).set(task_id=str(uuid.uuid4()))
    backend.apply_chord(header, callback)

    backend.on_chord_part_return(
        header_report(header.id, broken, callback), states.FAILURE, KeyError("the payment provider's answer")
    )

    failed = TaskResult.objects.get(task_id=callback.id)
    assert f"Dependency {broken} raised KeyError" in failed.result
    assert "the payment provider" in failed.result


class ReadsElsewhere:
    """A router sending reads of chord rows to a replica this test has not got."""

    def db_for_read(self, model, **hints):
        return "replica" if model in (ChordCounter, ChordPart) else None

    def db_for_write(self, model, **hints):
        return "default"


@pytest.mark.django_db(transaction=True)
def test_chord_reads_use_the_database_chord_writes_use(monkeypatch, settings):
    settings.DATABASE_ROUTERS = [f"{__name__}.ReadsElsewhere"]
    backend = ShopDatabaseBackend(app=app)
    only = str(uuid.uuid4())
    header = app.GroupResult(str(uuid.uuid4()), [app.AsyncResult(only)])
    callback = tasks.confirm_order.s().set(task_id=str(uuid.uuid4()))  # not immutable: reads the counter
    backend.apply_chord(header, callback)
    backend.store_result(only, 7, states.SUCCESS)
    sent = []
    monkeypatch.setattr(Signature, "apply_async", lambda self, args=(), *a, **kw: sent.append(args))

    backend.on_chord_part_return(header_report(header.id, only, callback), states.SUCCESS, 7)

    assert sent == [([7],)]


def planned_workflow_chord():
    """The order workflow's chord as the checkout plans it: its counter written now, keyed by the
    callback's task id (the group id is Celery's to pick when the chord is sent)."""
    shipment, sales = (
        step.si(str(uuid.uuid4())).set(task_id=str(uuid.uuid4()))
        for step in (tasks.create_shipment, tasks.record_sales)
    )
    callback = tasks.confirm_order.si(str(uuid.uuid4())).set(task_id=str(uuid.uuid4()))
    planned = planned_chord([shipment, sales], callback)
    return planned, [shipment.id, sales.id], callback.id


@pytest.mark.django_db(transaction=True)
def test_a_planned_chord_is_sent_without_a_statement_and_fires_once(monkeypatch, django_assert_num_queries):
    # The checkout writes the workflow's chord counter (one commit fewer in the charge's worker):
    # sending the chord then writes nothing, and the reports count that counter down, once each.
    backend = ShopDatabaseBackend(app=app)
    fired = []
    monkeypatch.setattr(backend, "_fire", lambda request, group_id: fired.append(group_id))
    planned, header_ids, key = planned_workflow_chord()
    assert counter_of(key) == 2
    assert header_task_ids(ChordCounter.objects.get(group_id=key)) == header_ids  # the orphan cleanup reads them
    body = planned.body
    sent = app.GroupResult(str(uuid.uuid4()), [app.AsyncResult(task_id) for task_id in header_ids])

    with django_assert_num_queries(0):
        backend.apply_chord(sent, body)
        backend.set_chord_size(sent.id, 2)
    for task_id in (header_ids[0], header_ids[0], header_ids[1]):  # the first one delivered twice
        backend.on_chord_part_return(header_report(sent.id, task_id, body), states.SUCCESS, 1)

    assert fired == [key] and counter_of(key) == 0
    assert not ChordCounter.objects.filter(group_id=sent.id).exists()
    # Sent again (the charge redelivered): still nothing written, and the callback does not fire again.
    backend.apply_chord(sent, body)
    backend.set_chord_size(sent.id, 2)
    backend.on_chord_part_return(header_report(sent.id, header_ids[1], body), states.SUCCESS, 1)
    assert fired == [key] and counter_of(key) == 0


@pytest.mark.django_db(transaction=True)
def test_a_planned_chord_of_another_size_is_resized_by_the_reports_it_counted(monkeypatch):
    backend = ShopDatabaseBackend(app=app)
    monkeypatch.setattr(backend, "_fire", lambda request, group_id: None)
    planned, header_ids, key = planned_workflow_chord()
    sent = app.GroupResult(str(uuid.uuid4()), [app.AsyncResult(task_id) for task_id in header_ids])
    backend.on_chord_part_return(header_report(sent.id, header_ids[0], planned.body), states.SUCCESS, 1)

    backend.apply_chord(sent, planned.body)
    backend.set_chord_size(sent.id, 3)  # as Celery would count a header entry ending in a group of two

    assert counter_of(key) == 2


@pytest.mark.django_db(transaction=True)
def test_a_planned_chord_failed_by_a_header_task_calls_its_error_callback_once(monkeypatch):
    backend = ShopDatabaseBackend(app=app)
    failed = []
    monkeypatch.setattr(backend, "chord_error_from_stack", lambda callback, exc: failed.append(exc))
    planned, header_ids, key = planned_workflow_chord()
    sent = app.GroupResult(str(uuid.uuid4()), [app.AsyncResult(task_id) for task_id in header_ids])
    backend.apply_chord(sent, planned.body)

    for task_id in (header_ids[0], header_ids[0]):  # redelivered after failing
        backend.on_chord_part_return(header_report(sent.id, task_id, planned.body), states.FAILURE, RuntimeError("x"))
    backend.on_chord_part_return(header_report(sent.id, header_ids[1], planned.body), states.SUCCESS, 1)

    assert len(failed) == 1
    assert not ChordCounter.objects.filter(group_id=key).exists()
