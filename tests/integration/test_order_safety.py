"""The order is the authority: every console action, periodic job and step obeys its state machine
(orders/lifecycle.py), against a real worker on a real broker. Each test is a finding of the
order-safety review that the earlier design failed."""

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from celery import states
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from notifications.models import Notification
from orders import maintenance
from orders.models import DemoGatewayCharge, Order, OrderEvent, Shipment, WorkflowStep
from shop.celery import app as celery_app
from shop.models import Product
from tasks_admin import console
from tasks_admin.models import PLANNED, SKIPPED, DeadLetter, TaskRecord
from tasks_admin.services import ActionRefused
from tests.factories import DECLINED_CARD, make_product, order_payload
from tests.fakes import switches
from tests.processes import WorkerProcess
from tests.support import WORKFLOW_STEPS, mailbox, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

UNSTARTED = (PLANNED, states.PENDING)


@pytest.fixture
def staff(client: Client) -> User:
    user = User.objects.create_superuser("safety", "safety@example.com", "pw")
    client.force_login(user)
    return user


@pytest.fixture
def fault_dir(fake_tasks_dir: Path) -> Path:
    return fake_tasks_dir  # the worker's FAULT_DIR (tests/conftest.py)


def place(client: Client, payload: dict) -> Order:
    response = client.post("/api/orders/", payload, content_type="application/json")
    assert response.status_code == 202, response.content
    return Order.objects.get(pk=response.json()["id"])


def record(order: Order, task: str, *states_: str) -> TaskRecord | None:
    records = TaskRecord.objects.about(order).filter(task_name=f"orders.tasks.{task}")
    return records.filter(state__in=states_).first() if states_ else records.last()


def status(order: Order) -> str:
    return Order.objects.values_list("status", flat=True).get(pk=order.pk)


def act(client: Client, action: str, task: TaskRecord, reason: str = "") -> list[str]:
    """Post a console action as staff would; return the messages the next page shows."""
    response = client.post(reverse(f"admin:tasks_admin_taskrecord_{action}", args=[task.pk]), {"reason": reason})
    assert response.status_code == 302, response.status_code
    return [str(m) for m in client.get(response["Location"]).context["messages"]]


@contextmanager
def consuming_paused(queue: str) -> Iterator[None]:
    """The worker stops taking messages from `queue` (they wait in the broker), then resumes; each
    returns on the worker's reply (without a limit, a broadcast waits out its timeout for others)."""
    celery_app.control.cancel_consumer(queue, reply=True, timeout=5, limit=1)
    try:
        yield
    finally:
        celery_app.control.add_consumer(queue, reply=True, timeout=5, limit=1)


@contextmanager
def frozen(worker: WorkerProcess) -> Iterator[None]:
    """Every process of the worker stopped (SIGSTOP), as a host under heavy load or a debugger would
    leave it: it hears nothing until it is continued."""
    os.killpg(worker.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(worker.process.pid, signal.SIGCONT)


def dropped(worker: WorkerProcess, record: TaskRecord) -> bool:
    """Whether the worker has had the task's message and did not run it: it heard the revoke first
    and discarded the message, or the message came first and the step's guard refused it. The
    record says REVOKED from the console's action on, before the worker has seen anything; a
    test that waited on it read the start of a run the guard was about to refuse (CI, 2026-12-07,
    with the worker's remote control seconds behind its queues)."""
    task = f"{record.task_name}[{record.task_id}]"
    log = worker.log()
    return f"Discarding revoked task: {task}" in log or f"Task {task} ignored" in log


def revoked(record: TaskRecord) -> bool:
    """Whether the task's record says revoked. After `dropped`, it ends so: a run its guard refused
    is recorded as started, then revoked, within milliseconds (tasks_admin/history.py)."""
    return TaskRecord.objects.get(pk=record.pk).state == states.REVOKED


def settled(order: Order) -> bool:
    """Nothing of the order is still to run: its final status, no step or task waiting."""
    return (
        status(order) in (*Order.FINAL_STATUSES, Order.Status.ON_HOLD)
        and not order.steps.filter(state=WorkflowStep.State.PENDING).exists()
        and not TaskRecord.objects.about(order).filter(state__in=(*UNSTARTED, states.STARTED)).exists()
    )


def test_revoking_a_queued_charge_cancels_the_order_and_the_recovery_job_never_charges_it(
    worker, client, staff, mail_dir
):
    product = make_product(stock=3)
    payload = order_payload((product, 2))
    with consuming_paused("orders"):
        order = place(client, payload)
        charge = wait_for(lambda: record(order, "charge_payment", states.PENDING), message="the charge queued")

        shown = act(client, "revoke", charge, reason="suspected fraud")
        assert any("Cancelled order" in message for message in shown), shown
        assert maintenance.recover_stuck_workflows(minutes=0).get(order.number) is None

    # The revoked message reaches the worker, which drops it: the order was never charged.
    wait_for(lambda: dropped(worker, charge), message="the revoked charge dropped")
    wait_for(lambda: revoked(charge), message="the charge recorded as revoked")
    wait_for(lambda: settled(order), message="nothing left to run")
    assert maintenance.recover_stuck_workflows(minutes=0).get(order.number) is None
    assert status(order) == Order.Status.CANCELLED
    assert not DemoGatewayCharge.objects.exists() and not Shipment.objects.exists()
    assert Product.objects.get(pk=product.pk).stock == 3
    others = TaskRecord.objects.about(order).exclude(pk=charge.pk)
    assert set(others.values_list("state", flat=True)) == {SKIPPED}
    event = OrderEvent.objects.get(order=order, kind="cancel")
    assert (event.actor, event.note) == ("staff:safety", "it was cancelled by our staff.")
    wait_for(lambda: mailbox(mail_dir, to=payload["customer"]["email"]), message="the customer told")
    assert [m["Subject"] for m in mailbox(mail_dir, to=payload["customer"]["email"])] == [
        f"Your order {order.number} was cancelled"
    ]


def test_a_charge_revoked_while_the_worker_is_frozen_does_not_run_when_it_wakes(worker, client, staff):
    product = make_product(stock=2)
    with frozen(worker):
        order = place(client, order_payload((product, 1)))
        charge = record(order, "charge_payment", states.PENDING)
        act(client, "revoke", charge)

    wait_for(lambda: dropped(worker, charge), message="the worker woke and dropped it")
    wait_for(lambda: revoked(charge), message="the charge recorded as revoked, not as succeeded")
    wait_for(lambda: settled(order), message="nothing left to run")
    assert status(order) == Order.Status.CANCELLED
    assert not DemoGatewayCharge.objects.exists()


def test_terminating_a_running_step_holds_the_paid_order_nothing_resends_it_and_staff_continue_it(
    worker, client, staff, fault_dir, mail_dir, sms_gateway
):
    product = make_product(stock=2)
    payload = order_payload((product, 1))
    with switches.slow(fault_dir, switches.SHIPMENT, 30) as running:
        order = place(client, payload)
        wait_for(running.exists, message="create_shipment running")
        shipment = wait_for(lambda: record(order, "create_shipment", states.STARTED), message="its run recorded")
        assert any("on hold" in message for message in act(client, "terminate", shipment, reason="wrong address"))
        wait_for(lambda: TaskRecord.objects.get(pk=shipment.pk).state == states.REVOKED, message="terminated")

    wait_for(lambda: settled(order), message="the held order settled")
    assert status(order) == Order.Status.ON_HOLD
    assert maintenance.recover_stuck_workflows(minutes=0).get(order.number) is None
    assert not Shipment.objects.filter(order=order).exists()
    assert Product.objects.get(pk=product.pk).stock == 1  # paid: its stock stays reserved
    assert mailbox(mail_dir, to=payload["customer"]["email"]) == []  # nothing to contradict later

    response = client.post(reverse("admin:orders_order_continue", args=[order.pk]), {"reason": "address checked"})
    assert response.status_code == 302
    wait_for(lambda: settled(order) and Notification.objects.filter(order=order, status="sent").count() == 2)
    assert status(order) == Order.Status.CONFIRMED
    assert DemoGatewayCharge.objects.get().requests == 1 and Shipment.objects.filter(order=order).count() == 1
    assert [m["Subject"] for m in mailbox(mail_dir, to=payload["customer"]["email"])] == [
        f"Your order {order.number} is confirmed"
    ]
    assert list(OrderEvent.objects.filter(order=order).order_by("at").values_list("kind", flat=True)) == [
        "hold",
        "resume",
    ]


def test_terminating_a_running_sms_cancels_that_message_only(worker, client, staff, fault_dir, sms_gateway):
    payload = order_payload((make_product(), 1))
    with switches.slow(fault_dir, switches.SMS, 30) as running:
        order = place(client, payload)
        wait_for(running.exists, timeout=60, message="the SMS being sent")
        sms = wait_for(lambda: record(order, "send_confirmation_sms", states.STARTED), message="its run recorded")
        act(client, "terminate", sms)
        wait_for(lambda: TaskRecord.objects.get(pk=sms.pk).state == states.REVOKED, message="terminated")

    assert status(order) == Order.Status.CONFIRMED
    assert Notification.objects.get(order=order, channel="sms").status == Notification.Status.CANCELLED
    resent = maintenance.recover_stuck_workflows(minutes=0)
    assert order.number not in resent and not resent.get("messages")
    assert sms_gateway.received(to=payload["customer"]["phone"]) == []


def test_a_declined_orders_shipment_can_be_neither_revoked_nor_retried_into_existence(worker, client, staff):
    order = place(client, order_payload((make_product(), 1), card_number=DECLINED_CARD))
    wait_for(lambda: settled(order), message="the declined order settled")
    shipment = record(order, "create_shipment")
    assert shipment.state == SKIPPED and console.offers(shipment) == []

    for action in ("revoke", "retry", "terminate"):
        shown = act(client, action, shipment)
        assert any("not possible" in message for message in shown), (action, shown)
        with pytest.raises(ActionRefused):
            console.perform(console.Action(action), shipment, user=staff)
    page = client.get(reverse("admin:tasks_admin_taskrecord_change", args=[shipment.pk])).content.decode()
    assert 'data-action="' not in page  # no button offered

    assert not Shipment.objects.exists()
    assert status(order) == Order.Status.CANCELLED


def test_a_declined_order_shows_nothing_queued_once_its_error_callback_ran(worker, client):
    order = place(client, order_payload((make_product(), 1), card_number=DECLINED_CARD))
    wait_for(lambda: record(order, "handle_order_failure", states.SUCCESS), message="the error callback ran")
    wait_for(lambda: settled(order), message="settled")

    assert not TaskRecord.objects.about(order).filter(state__in=UNSTARTED).exists()
    steps = client.get(f"/api/orders/{order.pk}/").json()["steps"]
    assert [(s["name"], s["state"]) for s in steps] == [
        ("charge_payment", "FAILURE"),
        ("create_shipment", "SKIPPED"),
        ("record_sales", "SKIPPED"),
        ("confirm_order", "SKIPPED"),
    ]
    assert all("declined" in s["error"] for s in steps[1:])


def test_the_order_page_and_api_never_show_a_confirmed_order_next_to_an_unfinished_step(worker, client):
    product = make_product(stock=50)
    orders = [place(client, order_payload((product, 1))) for _ in range(8)]
    confirmed_seen: set[str] = set()

    def check_all() -> bool:
        for order in orders:
            body = client.get(f"/api/orders/{order.pk}/").json()
            if body["status"] == Order.Status.CONFIRMED:
                assert [s["state"] for s in body["steps"]] == ["SUCCESS"] * len(WORKFLOW_STEPS), body
                confirmed_seen.add(body["id"])
        return len(confirmed_seen) == len(orders)

    wait_for(check_all, timeout=60, interval=0.01, message="every order confirmed")
    page = client.get(orders[0].get_absolute_url()).content.decode()
    assert "PENDING" not in page and "STARTED" not in page


def test_a_refused_sms_is_sent_to_the_corrected_number_when_staff_requeue_it(worker, client, staff, sms_gateway):
    payload = order_payload((make_product(), 1))
    sms_gateway.refuse(payload["customer"]["phone"])
    order = place(client, payload)
    letter = wait_for(lambda: DeadLetter.objects.about(order).first(), message="the refused SMS dead-lettered")
    assert status(order) == Order.Status.CONFIRMED

    new_phone = "+442071838750"
    form = client.get(reverse("admin:orders_order_change", args=[order.pk])).context["adminform"].form
    data = {**{name: form[name].value() for name in ("customer_name", "email", "shipping_address")}, "phone": new_phone}
    data |= _inline_management(client, order)
    response = client.post(reverse("admin:orders_order_change", args=[order.pk]), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    response = client.post(reverse("admin:tasks_admin_deadletter_retry", args=[letter.pk]), {"reason": "number fixed"})
    assert response.status_code == 302

    wait_for(lambda: Notification.objects.get(order=order, channel="sms").status == "sent", message="sent")
    assert [r.to for r in sms_gateway.accepted()] == [new_phone]  # the gateway was called afresh
    assert not DeadLetter.objects.about(order).exists()
    event = OrderEvent.objects.get(order=order, kind="contact_changed")
    assert event.changes == {"phone": [payload["customer"]["phone"], new_phone]} and event.user == staff


def test_requeueing_an_sms_that_ran_out_of_retries_sends_it_and_the_order_stays_confirmed(
    worker, client, staff, sms_gateway, settings
):
    sms_gateway.script(*[503] * (settings.TASK_MAX_RETRIES + 1))
    payload = order_payload((make_product(), 1))
    order = place(client, payload)
    letter = wait_for(lambda: DeadLetter.objects.about(order).first(), timeout=60, message="retries exhausted")

    client.post(reverse("admin:tasks_admin_deadletter_retry", args=[letter.pk]))

    wait_for(lambda: Notification.objects.get(order=order, channel="sms").status == "sent", message="sent")
    assert status(order) == Order.Status.CONFIRMED
    assert len(sms_gateway.accepted(to=payload["customer"]["phone"])) == 1


def _inline_management(client: Client, order: Order) -> dict:
    """The inline formsets' management fields of the order's change form, as the browser posts them."""
    context = client.get(reverse("admin:orders_order_change", args=[order.pk])).context
    data = {}
    for formset in context["inline_admin_formsets"]:
        management = formset.formset.management_form
        for name, field in management.fields.items():
            data[f"{management.prefix}-{name}"] = management.initial.get(name, field.initial)
    return data


def test_a_parallel_step_that_fails_for_good_runs_the_error_callback_once(worker, client, fault_dir):
    with switches.failing(fault_dir, switches.SHIPMENT):
        order = place(client, order_payload((make_product(), 1)))
        wait_for(lambda: settled(order), message="the order held")
    wait_for(lambda: record(order, "handle_order_failure", states.SUCCESS), message="the error callback ran")
    # The chord fails at once (tasks_admin/backend.py); its error callback is not called again for it.
    wait_for(lambda: TaskRecord.objects.about(order).get(task_name="orders.tasks.record_sales").finished_at)
    assert status(order) == Order.Status.ON_HOLD
    assert TaskRecord.objects.about(order).filter(task_name="orders.tasks.handle_order_failure").count() == 1
