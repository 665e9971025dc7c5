"""Property-based: random sequences of checkouts, customers cancelling (a failed order too), worker
crashes, provider faults, console actions and periodic jobs, against the real worker, never break
the order's rules.

After every step: stock on hand plus the units held by orders equals what there was, no order is
shipped unpaid, none is charged twice, and /metrics' orders and messages by status (a tally
folded while the worker runs) are the tables'. After the run (faults off, held orders continued
and failed cancellations retried by staff, the recovery job run): every order is final, what was
charged and not kept is refunded once, and what its customer was told agrees with it.
"""

import os
import signal
import time
from collections import Counter
from contextlib import suppress
from pathlib import Path

import psutil
import pytest
from celery import states
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import Client
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from notifications import metrics as notification_metrics
from notifications.models import Notification
from orders import cancellation_workflow, maintenance
from orders import console as order_console
from orders import metrics as order_metrics
from orders.errors import CheckoutError, OrderActionRefused
from orders.models import DemoGatewayCharge, Order, OrderLine, Payment, Shipment
from shop.models import Product
from tasks_admin import console
from tasks_admin.models import TaskRecord
from tasks_admin.services import ActionRefused
from tests.factories import DECLINED_CARD, GOOD_CARD, make_product, order_payload
from tests.fakes import switches
from tests.processes import WorkerProcess
from tests.support import WORKFLOW_TASKS, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

STOCK = 12
HOLDING = [status.value for status in Order.HOLDING_STOCK]


class World:
    """What the machine drives: set by the test from its fixtures."""

    client: Client
    staff: User
    worker: WorkerProcess
    fault_dir: Path


def units_accounted_for(product: Product) -> int:
    """Stock on hand plus the units held by orders (an order being cancelled holds them until its
    cancellation releases them), in one statement (one snapshot of the database)."""
    line, order, table = OrderLine._meta.db_table, Order._meta.db_table, Product._meta.db_table
    placeholders = ", ".join(["%s"] * len(HOLDING))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT p.stock + COALESCE((SELECT SUM(l.quantity) FROM {line} l JOIN {order} o ON o.id = l.order_id "
            f"WHERE l.product_id = p.id AND (o.status IN ({placeholders}) "
            "OR (o.status = %s AND o.stock_released_at IS NULL))), 0) "
            f"FROM {table} p WHERE p.id = %s",
            [*HOLDING, Order.Status.CANCELLING, product.pk],
        )
        return cursor.fetchone()[0]


class OrderRules(RuleBasedStateMachine):
    orders = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        self.product = make_product(stock=STOCK)
        self.placed: list[str] = []

    @rule(target=orders, declined=st.booleans(), quantity=st.integers(1, 3))
    def checkout(self, declined: bool, quantity: int):
        payload = order_payload((self.product, quantity), card_number=DECLINED_CARD if declined else GOOD_CARD)
        response = World.client.post("/api/orders/", payload, content_type="application/json")
        assert response.status_code in (202, 409), response.content
        if response.status_code == 409:  # out of stock: refused, nothing reserved
            return None
        self.placed.append(response.json()["id"])
        return response.json()["id"]

    @rule(order_id=orders, task=st.sampled_from(WORKFLOW_TASKS), action=st.sampled_from(list(console.Action)))
    def console_action(self, order_id: str | None, task: str, action: console.Action):
        record = (
            TaskRecord.objects.about_any(Order, [order_id])
            .filter(task_name=f"orders.tasks.{task}")
            .order_by("-id")
            .first()
        )
        if record is None:
            return
        try:
            console.perform(action, record, user=World.staff, reason="hypothesis")
        except ActionRefused:
            pass  # refused in this state: the rules held

    @rule(order_id=orders)
    def customer_cancel(self, order_id: str | None):
        """The customer cancels from the order's page (the API's twin): pending, paid, on hold or
        failed, before it ships; refused once shipped or while the charge is at the gateway."""
        if order_id is None:
            return
        response = World.client.post(f"/api/orders/{order_id}/cancel/", {}, content_type="application/json")
        assert response.status_code in (202, 409), response.content

    @rule(order_id=orders)
    def staff_continue(self, order_id: str | None):
        if order_id is None:
            return
        try:
            order_console.continue_order(Order.objects.get(pk=order_id), user=World.staff, reason="hypothesis")
        except (OrderActionRefused, CheckoutError):
            pass

    @rule()
    def recovery_job(self):
        maintenance.recover_stuck_workflows(minutes=0)

    @rule()
    def stale_order_job(self):
        maintenance.cancel_stale_orders(minutes=0)

    @rule(fault=st.sampled_from(switches.SWITCHES), on=st.booleans())
    def provider_fault(self, fault: str, on: bool):
        """The gateway, the warehouse or the SMS provider starts or stops failing for good."""
        switch = World.fault_dir / f"fail-{fault}"
        if on:
            switch.touch()
        else:
            switch.unlink(missing_ok=True)

    @rule()
    def kill_a_pool_process(self):
        """SIGKILL one of the worker's pool processes, as the OOM killer would, mid-whatever-it-runs."""
        children = psutil.Process(World.worker.process.pid).children()
        # A child listed may be gone by now (the worker reaps one a previous rule killed): then this
        # rule kills nothing, as with no child at all (seen as a ProcessLookupError in a loaded run).
        with suppress(ProcessLookupError):
            if children:
                os.kill(children[0].pid, signal.SIGKILL)

    @invariant()
    def stock_is_accounted_for(self):
        assert units_accounted_for(self.product) == STOCK

    @invariant()
    def nothing_ships_unpaid(self):
        assert not Shipment.objects.exclude(order__payment__status=Payment.Status.CAPTURED).exists()

    @invariant()
    def metrics_count_the_orders_and_messages_as_they_are(self):
        """/metrics' orders by status and messages by status (tasks_admin/rowcounts.py): a scrape
        folds a little while the worker moves orders and sends messages, and the tally plus the
        moves not folded yet equal the tables, read in one snapshot."""
        for counted in (order_metrics.BY_STATUS, notification_metrics.BY_STATUS):
            counted.fold(batch_size=2, max_batches=1)
            with transaction.atomic():
                if connection.vendor == "postgresql":
                    with connection.cursor() as cursor:
                        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                tallied = counted.counts(fold_first=None)
                table = counted.model.objects.order_by().values_list(*counted.group, counted.field)
                expected = Counter(tuple(row) for row in table)
            assert {labels: n for labels, n in tallied.items() if n} == expected

    def teardown(self):
        for target in switches.SWITCHES:
            (World.fault_dir / f"fail-{target}").unlink(missing_ok=True)
        wait_for(self._drained, timeout=120, interval=0.5, message="every order final")
        self._check_final()

    def _drained(self) -> bool:
        """Staff continue held orders and retry failed cancellations (a refund refused while the
        fault was on), and the recovery job runs, until every order is final."""
        orders = Order.objects.filter(pk__in=self.placed)
        for order in orders.filter(status=Order.Status.ON_HOLD):
            try:
                order_console.continue_order(order, user=World.staff, reason="drain")
            except (OrderActionRefused, CheckoutError):
                pass
        for order in orders.filter(status=Order.Status.CANCELLING):
            failed = TaskRecord.objects.about(order).filter(
                task_name__in=cancellation_workflow.TASK_NAMES, state=states.FAILURE, resolved_at__isnull=True
            )
            if (record := failed.first()) is not None:
                with suppress(ActionRefused):
                    console.perform(console.Action.RETRY, record, user=World.staff, reason="drain")
        maintenance.recover_stuck_workflows(minutes=0.02)
        busy = orders.exclude(status__in=Order.FINAL_STATUSES).exists()
        return not busy and not Notification.objects.filter(order__in=orders, status="pending").exists()

    def _check_final(self):
        for order in Order.objects.filter(pk__in=self.placed):
            charges = DemoGatewayCharge.objects.filter(idempotency_key=f"order:{order.pk}:charge")
            captured = Payment.objects.filter(order=order, status=Payment.Status.CAPTURED).exists()
            refunded = Payment.objects.filter(order=order, status=Payment.Status.REFUNDED).exists()
            assert charges.count() <= 1 and charges.count() == captured + refunded, order
            # Charged and cancelled: refunded at the gateway (once: a charge is refunded at most once).
            assert refunded == charges.filter(refunded_at__isnull=False).exists(), order
            assert not (captured and order.status == Order.Status.CANCELLED), order
            # What the customer was told (a message staff chose not to send is not among it).
            told = {n.idempotency_key.split(":")[2] for n in order.notifications.exclude(status="cancelled")}
            if order.status == Order.Status.CONFIRMED:
                assert captured and Shipment.objects.filter(order=order).exists()
                assert "cancelled" not in told, (order, told)  # ("failed" then confirmed: staff fixed it)
            else:  # stopped before it was paid, and told so
                assert not captured and "confirmation" not in told, (order, told)
                assert order.status in told, (order, order.status, told)
        assert units_accounted_for(self.product) == STOCK


def test_random_sequences_of_customers_crashes_faults_staff_and_jobs_keep_the_orders_rules(
    worker, client, fake_tasks_dir
):
    World.client, World.worker, World.fault_dir = client, worker, fake_tasks_dir
    World.staff = User.objects.create_superuser("hypothesis", "h@example.com", "pw")
    started = time.monotonic()
    run_state_machine_as_test(
        OrderRules,
        settings=settings(
            max_examples=int(os.environ.get("ORDER_RULES_EXAMPLES", "8")),
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=bool(os.environ.get("CI")),  # the same sequences in CI; new ones on a laptop
        ),
    )
    print(f"order rules held over the examples in {time.monotonic() - started:.0f} s")


def test_the_rules_hold_for_a_failed_order_its_customer_cancels(worker, client, fake_tasks_dir):
    """The sequence random runs seldom draw (the gateway failing for good, an order failing, its
    customer cancelling it), played through the same machine: its invariants after each step and
    its checks at the end (cancelled, nothing charged or refunded, told it failed then cancelled)."""
    World.client, World.worker, World.fault_dir = client, worker, fake_tasks_dir
    World.staff = User.objects.create_superuser("hypothesis", "h@example.com", "pw")
    machine = OrderRules()

    def check() -> None:
        machine.stock_is_accounted_for()
        machine.nothing_ships_unpaid()

    machine.provider_fault(switches.CHARGE, on=True)
    order_id = machine.checkout(declined=False, quantity=2)
    wait_for(lambda: Order.objects.get(pk=order_id).status == Order.Status.FAILED, message="the order failed")
    check()
    machine.provider_fault(switches.CHARGE, on=False)
    machine.customer_cancel(order_id)
    assert Order.objects.get(pk=order_id).status in (Order.Status.CANCELLING, Order.Status.CANCELLED)
    check()
    machine.teardown()
    order = Order.objects.get(pk=order_id)
    assert order.status == Order.Status.CANCELLED and order.payment.status == Payment.Status.VOIDED
    assert set(order.notifications.values_list("idempotency_key", flat=True)) == {
        f"order:{order_id}:failed:email",
        f"order:{order_id}:cancelled:email",
        f"order:{order_id}:cancelled:sms",
    }
