"""The task console against a real worker: history from the moment of sending, exact
retries with an audit trail, continue-workflow, dead letters and revokes."""

import datetime as dt
from decimal import Decimal

import pytest
from celery import states
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone
from kombu.utils.json import loads

from orders.models import DemoGatewayCharge, Order
from shop.models import Product
from tasks_admin.models import DeadLetter, TaskAction, TaskRecord, subject_key
from tests.factories import DECLINED_CARD, make_product, order_payload
from tests.fakes import switches
from tests.fakes import tasks as fake_tasks
from tests.support import WORKFLOW_TASKS, mailbox, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff(client):
    user = User.objects.create_superuser("console", "console@example.com", "pw")
    client.force_login(user)
    return user


def place(client, payload) -> Order:
    response = client.post("/api/orders/", payload, content_type="application/json")
    assert response.status_code == 202, response.content
    return Order.objects.get(pk=response.json()["id"])


def record_in_state(task_id: str, *wanted: str) -> TaskRecord | None:
    return TaskRecord.objects.filter(task_id=task_id, state__in=wanted).first()


def test_each_task_of_an_order_is_recorded_with_its_canvas_links_and_outcome(worker, client):
    order = place(client, order_payload((make_product(), 1)))
    wait_for(lambda: TaskRecord.objects.about(order).filter(state=states.SUCCESS).count() == 6, message="6 tasks")

    records = {r.task_name.rpartition(".")[2]: r for r in TaskRecord.objects.about(order)}
    assert sorted(records) == sorted(WORKFLOW_TASKS)
    charge = records["charge_payment"]
    assert charge.args == [str(order.pk)] and charge.root_id == charge.task_id and charge.queue == "orders"
    header = [records[name] for name in ("create_shipment", "record_sales")]
    assert {r.parent_id for r in header} == {charge.task_id}
    assert len({r.group_id for r in header}) == 1 and header[0].group_id
    assert {r.chord_id for r in header} == {records["confirm_order"].task_id}
    messages = [records[name] for name in ("send_confirmation_email", "send_confirmation_sms")]
    assert {r.parent_id for r in messages} == {records["confirm_order"].task_id}
    assert {r.queue for r in messages} == {"notifications"}
    for record in records.values():
        assert record.root_id == charge.task_id
        assert record.attempts == 1 and record.worker and record.runtime is not None
        assert record.sent_at <= record.started_at <= record.finished_at


def test_a_task_is_visible_as_queued_from_the_moment_it_is_sent(worker):
    result = fake_tasks.sleep_for.apply_async((0,), countdown=30)
    record = wait_for(lambda: record_in_state(result.id, states.PENDING), message="queued record")
    assert record.eta is not None and record.started_at is None and record.args == [0]
    result.revoke()


def test_retry_sends_decimal_datetime_and_a_10kb_string_again_exactly_and_is_audited(worker, client, staff):
    tag = "exact"
    sent_args = [Decimal("12.3400"), dt.datetime(2026, 11, 22, 9, 30, 15, 123456, tzinfo=dt.UTC), "é" * 10240]
    sent_kwargs = {"due": dt.date(2026, 12, 1), "amount": Decimal("-0.01")}
    fake_tasks.fail_next_run(tag)
    first = fake_tasks.record_arguments.apply_async((tag, *sent_args), sent_kwargs, queue="notifications")
    failed = wait_for(lambda: record_in_state(first.id, states.FAILURE), message="first run failed")
    assert failed.exception_type == "RuntimeError" and DeadLetter.objects.filter(pk=failed.pk).exists()

    response = client.post(
        reverse("admin:tasks_admin_taskrecord_retry", args=[failed.pk]), {"reason": "provider fixed"}, follow=False
    )
    assert response.status_code == 302
    retried = TaskRecord.objects.get(retry_of=failed)
    assert response["Location"] == reverse("admin:tasks_admin_taskrecord_change", args=[retried.pk])
    wait_for(lambda: record_in_state(retried.task_id, states.SUCCESS), message="retry succeeded")

    received = loads(fake_tasks.received(tag))
    assert received["args"] == sent_args
    assert [type(a) for a in received["args"]] == [Decimal, dt.datetime, str]
    assert received["kwargs"] == sent_kwargs and type(received["kwargs"]["amount"]) is Decimal
    assert retried.queue == "notifications" and retried.task_name == failed.task_name
    failed.refresh_from_db()
    assert failed.resolved_at and not DeadLetter.objects.filter(pk=failed.pk).exists()
    action = TaskAction.objects.get(kind=TaskAction.Kind.RETRY)
    assert (action.user, action.task, action.new_task_id, action.reason) == (
        staff,
        failed,
        retried.task_id,
        "provider fixed",
    )
    assert LogEntry.objects.filter(object_id=str(failed.pk), change_message__contains=retried.task_id).exists()
    detail = client.get(reverse("admin:tasks_admin_taskrecord_change", args=[retried.pk])).content.decode()
    assert failed.task_id in detail  # "retry of" link


def test_continue_workflow_reruns_the_failed_step_and_the_rest_only(worker, client, staff, mail_dir, fake_tasks_dir):
    product = make_product(stock=3)
    payload = order_payload((product, 2))
    with switches.failing(fake_tasks_dir, switches.SHIPMENT):  # the warehouse refuses: a permanent error
        order = place(client, payload)
        wait_for(lambda: Order.objects.get(pk=order.pk).status == Order.Status.ON_HOLD, message="order on hold")
    assert Product.objects.get(pk=product.pk).stock == 1  # paid: its stock stays reserved
    assert mailbox(mail_dir, to=payload["customer"]["email"]) == []  # nothing said that a confirmation contradicts
    old = {step.name: step for step in order.steps.all()}
    assert old["create_shipment"].state == states.FAILURE
    # Staff continue once they see the dead letter (recorded just after the failure callback was sent).
    wait_for(lambda: DeadLetter.objects.about(order).exists(), message="the shipment's dead letter")

    response = client.post(reverse("admin:orders_order_continue", args=[order.pk]), {"reason": "warehouse back"})
    assert response.status_code == 302
    wait_for(lambda: order.notifications.filter(status="sent").count() == 2, message="confirmed and told")

    steps = {s.name: s for s in order.steps.all()}
    assert Order.objects.get(pk=order.pk).status == Order.Status.CONFIRMED
    assert all(step.state == states.SUCCESS for step in steps.values())
    assert steps["charge_payment"].task_id == old["charge_payment"].task_id  # not run again
    assert steps["create_shipment"].task_id != old["create_shipment"].task_id
    rerun = TaskRecord.objects.get(task_id=steps["create_shipment"].task_id)
    assert rerun.retry_of.task_id == old["create_shipment"].task_id
    assert DemoGatewayCharge.objects.get().requests == 1  # charged once
    confirmations = [m for m in mailbox(mail_dir, to=payload["customer"]["email"]) if "confirmed" in m["Subject"]]
    assert len(confirmations) == 1
    product.refresh_from_db()
    assert (product.stock, product.units_sold) == (1, 2)
    assert TaskAction.objects.filter(
        kind=TaskAction.Kind.CONTINUE_WORKFLOW, subject_id=subject_key(order), user=staff
    ).exists()
    assert not DeadLetter.objects.about(order).exists()


def test_a_declined_card_is_an_outcome_not_a_dead_letter_but_a_refused_sms_is(worker, client, sms_gateway):
    declined = place(client, order_payload((make_product(), 1), card_number=DECLINED_CARD))
    sms_gateway.script(400)
    refused = place(client, order_payload((make_product(), 1)))
    wait_for(lambda: refused.notifications.filter(channel="sms", status="failed").exists(), message="sms refused")
    wait_for(lambda: Order.objects.get(pk=declined.pk).status == Order.Status.CANCELLED, message="declined")
    # A task's failure is recorded just after its failure callback was sent, which may stop the order first.
    charge = wait_for(
        lambda: (
            TaskRecord.objects.about(declined)
            .filter(task_name="orders.tasks.charge_payment", state=states.FAILURE)
            .first()
        ),
        message="the charge's failure recorded",
    )
    wait_for(lambda: DeadLetter.objects.about(refused).exists(), message="the SMS's dead letter")

    assert charge.expected_failure
    letters = list(DeadLetter.objects.all())
    assert [(d.task_name, d.exception_type) for d in letters] == [
        ("orders.tasks.send_confirmation_sms", "PermanentProviderError")
    ]


def test_resolving_a_dead_letter_takes_a_note_and_removes_it_from_the_list(worker, client, staff):
    fake_tasks.fail_next_run("resolve")
    result = fake_tasks.record_arguments.delay("resolve")
    letter = wait_for(lambda: DeadLetter.objects.filter(task_id=result.id).first(), message="dead letter")
    url = reverse("admin:tasks_admin_taskrecord_resolve", args=[letter.pk])

    client.post(url, {"reason": ""})
    assert DeadLetter.objects.filter(pk=letter.pk).exists()  # a note is required
    client.post(url, {"reason": "re-ran by hand"})
    assert not DeadLetter.objects.filter(pk=letter.pk).exists()
    letter.refresh_from_db()
    assert (letter.resolved_by, letter.resolution_note) == (staff, "re-ran by hand")


def test_revoking_a_queued_task_stops_it_from_running(worker, client, staff):
    result = fake_tasks.sleep_for.apply_async((0,), countdown=5)
    record = wait_for(lambda: record_in_state(result.id, states.PENDING), message="queued")

    response = client.post(reverse("admin:tasks_admin_taskrecord_revoke", args=[record.pk]), {"reason": "not needed"})

    assert response.status_code == 302
    # The premise: the worker had the revoke before the task was due (the worker drops it then).
    wait_for(lambda: f"Tasks flagged as revoked: {result.id}" in worker.log(), message="the worker told of the revoke")
    assert timezone.now() < record.eta, "the revoke reached the worker only after the task was due"
    wait_for(lambda: "revoked" in TaskRecord.objects.get(pk=record.pk).exception_message, timeout=15)
    record.refresh_from_db()
    assert record.state == states.REVOKED and record.started_at is None and record.attempts == 0
    assert TaskAction.objects.filter(kind=TaskAction.Kind.REVOKE, task=record).exists()


def test_terminating_a_running_task_kills_it(worker, client, staff):
    result = fake_tasks.sleep_for.delay(30)
    record = wait_for(lambda: record_in_state(result.id, states.STARTED), message="running")

    client.post(reverse("admin:tasks_admin_taskrecord_terminate", args=[record.pk]))

    wait_for(lambda: "terminated" in TaskRecord.objects.get(pk=record.pk).exception_message, timeout=15)
    assert TaskRecord.objects.get(pk=record.pk).state == states.REVOKED
