"""The result backend's bookkeeping under redelivery and database outages (no worker needed)."""

import time
import uuid
from types import SimpleNamespace

import pytest
from celery import states
from django.db import OperationalError
from django_celery_results.models import ChordCounter, TaskResult

from orders import tasks
from shop.celery import app
from tasks_admin.backend import ShopDatabaseBackend
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
