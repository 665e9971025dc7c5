"""13. Operators at work: staff revoke queued charges, terminate running steps, retry and requeue
failed ones from the task console — over HTTP, as a logged-in member of staff on the web host —
while the workers run and the recovery job runs every 2 s.

Every action must mean what the order's state machine says (README, "The task console"): a
revoked charge cancels its order and is never charged, even by the recovery job; a terminated
step holds its paid order until staff continue it; a requeued step finishes its order. Nothing
is charged, shipped or told twice, and no customer hears anything contradicting the outcome.
"""

import time
from collections.abc import Callable
from uuid import UUID

import requests
from celery import states
from django.contrib.auth.models import User
from django.db import close_old_connections

from orders.models import DemoGatewayCharge, Order
from tasks_admin.models import DeadLetter, TaskRecord
from tests.support import wait_for

from .harness import Stack
from .scenarios import payloads, run_recovery, stock_up

SHIPMENT = "orders.services:create_shipment"
CANCELLED, HELD, REQUEUED, UNTOUCHED = 5, 4, 6, 5
STOCK = 100


class Operator:
    """A member of staff in the admin of the stack's web host."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base, self.session = base_url, requests.Session()
        self.session.get(f"{base_url}/admin/login/", timeout=10)
        response = self._post("/admin/login/?next=/admin/", {"username": username, "password": password})
        assert response.status_code == 302, response.text[:500]

    def _post(self, path: str, data: dict) -> requests.Response:
        data = {**data, "csrfmiddlewaretoken": self.session.cookies["csrftoken"]}
        return self.session.post(self.base + path, data, allow_redirects=False, timeout=30)

    def act(self, action: str, record: TaskRecord, reason: str = "operator scenario") -> None:
        response = self._post(f"/admin/tasks_admin/taskrecord/{record.pk}/{action}/", {"reason": reason})
        assert response.status_code == 302, response.status_code

    def requeue(self, letters: list[TaskRecord]) -> None:
        response = self._post(
            "/admin/tasks_admin/deadletter/",
            {"action": "requeue_selected", "_selected_action": [r.pk for r in letters], "index": 0, "reason": "fixed"},
        )
        assert response.status_code == 302, response.status_code


def records(order_ids: list[str], task: str, state: str) -> list[TaskRecord]:
    close_old_connections()
    return list(TaskRecord.objects.about_any(Order, order_ids).filter(task_name=f"orders.tasks.{task}", state=state))


def statuses(order_ids: list[str]) -> dict[str, int]:
    close_old_connections()
    found: dict[str, int] = {}
    for status in Order.objects.filter(pk__in=order_ids).values_list("status", flat=True):
        found[status] = found.get(status, 0) + 1
    return found


def test_console_actions_on_order_steps_obey_the_order(make_stack: Callable[..., Stack], record) -> None:
    stack = make_stack(env={"FAULT_SWITCHES": SHIPMENT})
    stack.start(workers=0)
    User.objects.create_superuser("operator", "operator@example.com", "pw")
    operator = Operator(stack.web_url, "operator", "pw")
    product = stock_up(STOCK)
    batch = iter(payloads(product, CANCELLED + UNTOUCHED + HELD + REQUEUED))
    started = time.monotonic()

    # Revoke queued charges: no worker yet, so every charge waits in the broker.
    queued = stack.place_orders([next(batch) for _ in range(CANCELLED + UNTOUCHED)])
    wait_for(lambda: len(records(queued, "charge_payment", states.PENDING)) == len(queued), message="charges queued")
    revoked = records(queued, "charge_payment", states.PENDING)[:CANCELLED]
    for charge in revoked:
        operator.act("revoke", charge)
    cancelled_ids = [str(UUID(r.subject_id)) for r in revoked]
    stack.start_worker()
    run_recovery(stack)  # every 2 s from now on: it must never send a revoked charge again
    stack.wait_until_final(queued)  # each phase ends before the next one's faults begin

    # Terminate running steps: each create_shipment hangs in the worker until it is terminated.
    (stack.fault_dir / f"slow-{SHIPMENT}").write_text("60")
    held = stack.place_orders([next(batch) for _ in range(HELD)])
    deadline = time.monotonic() + 120
    while statuses(held).get(Order.Status.ON_HOLD, 0) < HELD:
        for running in records(held, "create_shipment", states.STARTED):
            operator.act("terminate", running)
        assert time.monotonic() < deadline, statuses(held)
        time.sleep(0.3)
    (stack.fault_dir / f"slow-{SHIPMENT}").unlink()
    terminated = wait_for(
        lambda: len(found := records(held, "create_shipment", states.REVOKED)) == HELD and found,
        message="each terminated run recorded by its worker",
    )
    for run in terminated:  # "Continue order"
        operator.act("retry", run)
    stack.wait_until_final(held)

    # Requeue dead letters: the warehouse refuses every shipment for a while.
    (stack.fault_dir / f"fail-{SHIPMENT}").touch()
    failing = stack.place_orders([next(batch) for _ in range(REQUEUED)])
    wait_for(lambda: statuses(failing).get(Order.Status.ON_HOLD) == REQUEUED, timeout=90, message="all held")
    (stack.fault_dir / f"fail-{SHIPMENT}").unlink()
    letters = list(DeadLetter.objects.about_any(Order, failing))
    assert len(letters) == REQUEUED
    operator.requeue(letters)

    everyone = queued + held + failing
    stack.wait_until_final(everyone)
    elapsed = time.monotonic() - started
    audit = stack.audit(everyone)
    close_old_connections()
    charged = set(
        DemoGatewayCharge.objects.filter(idempotency_key__in=[f"order:{i}:charge" for i in cancelled_ids]).values_list(
            "idempotency_key", flat=True
        )
    )
    contradictions = sum(
        1
        for order in Order.objects.filter(pk__in=everyone)
        for message in stack.smtp.received(to=order.email)
        if order.number in message.subject
        and ("confirmed" in message.subject) != (order.status == Order.Status.CONFIRMED)
    )
    record(
        "13. operators act on order steps",
        audit.figures(),
        faults=f"over HTTP as staff, with the recovery job every 2 s: {CANCELLED} queued charges revoked, "
        f"{HELD} running create_shipment steps terminated then retried, {REQUEUED} create_shipment dead letters "
        f"requeued after the warehouse came back",
        notes=f"revoked: {CANCELLED} orders cancelled, {len(charged)} charged, their stock released, each customer "
        f"told once that it was cancelled; terminated: {HELD} orders held (the recovery job left them alone), then "
        f"confirmed once retried; requeued: {REQUEUED} orders confirmed; {contradictions} messages contradicting an "
        f"order's outcome; all {len(everyone)} orders final {elapsed:.0f} s after the first checkout",
    )
    assert statuses(cancelled_ids) == {Order.Status.CANCELLED: CANCELLED}
    assert not charged
    for order in Order.objects.filter(pk__in=cancelled_ids):
        assert [m.subject for m in stack.smtp.received(to=order.email)] == [f"Your order {order.number} was cancelled"]
    product.refresh_from_db()
    assert product.stock == STOCK - (len(everyone) - CANCELLED)  # the cancelled orders' units back on sale
    assert audit.confirmed == len(everyone) - CANCELLED, audit
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)
    assert contradictions == 0
