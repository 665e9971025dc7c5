"""The orders' periodic upkeep: unpaid orders are cancelled, stuck workflows and messages sent on,
and the task history a dead worker left behind settled."""

from datetime import timedelta

import pytest
from celery import states
from django.core import mail
from django.utils import timezone

from notifications import services as notifications
from notifications.models import Notification
from orders import cancellation, lifecycle, maintenance, services
from orders.checkout import Customer, place_order
from orders.models import Order, OrderEvent, Payment, WorkflowStep
from shop.models import Product
from tasks_admin import subjects
from tasks_admin.errors import TransientProviderError
from tasks_admin.models import SKIPPED, TaskRecord
from tests.factories import GOOD_CARD, make_product, reach
from tests.support import WORKFLOW_STEPS

pytestmark = pytest.mark.django_db

Status = Order.Status
State = WorkflowStep.State


@pytest.fixture(autouse=True)
def local_providers(settings, tmp_path):
    settings.PAYMENT_DEMO_LATENCY = 0
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SMS_PROVIDER = "file"
    settings.SMS_FILE_PATH = str(tmp_path / "sms.log")
    settings.STALE_ORDER_MINUTES = 60
    settings.STUCK_WORKFLOW_MINUTES = 10


def place(product: Product, quantity: int = 1, *, email: str = "grace@example.com") -> Order:
    """An order whose workflow was never sent (on_commit does not run here)."""
    return place_order(
        customer=Customer(name="Grace Hopper", email=email, phone="+12025550123"),
        shipping_address="Arlington",
        items=[(product.sku, quantity)],
        card_number=GOOD_CARD,
    )


def age(order: Order, minutes: int) -> Order:
    """As if it was placed, last moved, and its tasks last sent `minutes` ago."""
    then = timezone.now() - timedelta(minutes=minutes)
    Order.objects.filter(pk=order.pk).update(created_at=then, updated_at=then)
    TaskRecord.objects.about(order).update(sent_at=then)
    return order


def placed(product: Product, quantity: int = 1, *, minutes_ago: int, status: str = Status.PENDING, **kw) -> Order:
    return age(reach(place(product, quantity, **kw), status), minutes_ago)


def reload(order: Order) -> Order:
    return Order.objects.get(pk=order.pk)


def stock_of(product: Product) -> int:
    return Product.objects.values_list("stock", flat=True).get(pk=product.pk)


# cancel_stale_orders


def test_an_unpaid_order_past_the_limit_is_cancelled_its_stock_released_and_the_customer_told_once(
    deliveries, django_capture_on_commit_callbacks
):
    product = make_product(stock=5)
    order = placed(product, 2, minutes_ago=61)
    assert stock_of(product) == 3

    with django_capture_on_commit_callbacks(execute=True):
        assert maintenance.cancel_stale_orders() == {"cancelled": 1}

    order = reload(order)
    assert order.status == Status.CANCELLED
    assert order.failure_reason == "it was not paid within 60 minutes."
    assert stock_of(product) == 5
    assert set(order.steps.values_list("state", flat=True)) == {State.SKIPPED}
    key = f"order:{order.pk}:cancelled:email"
    assert deliveries == [key]
    notifications.deliver(key)
    [message] = mail.outbox
    assert message.to == ["grace@example.com"]
    assert message.subject == f"Your order {order.number} was cancelled"
    assert "not paid within 60 minutes" in message.body and "not been charged" in message.body
    event = OrderEvent.objects.get(order=order)
    assert (event.kind, event.actor) == ("cancel", "job:cancel_stale_orders")

    with django_capture_on_commit_callbacks(execute=True):
        assert maintenance.cancel_stale_orders() == {"cancelled": 0}
    assert deliveries == [key]
    assert stock_of(product) == 5


def test_an_order_paid_long_ago_keeps_its_stock_and_counted_sales(django_capture_on_commit_callbacks):
    # Replaces "the sales an unpaid order counted are taken back out": sales are counted only
    # once paid, and a paid order is never stale.
    product = make_product(stock=5)
    order = place(product, 2)
    services.charge_payment(str(order.pk))
    services.record_sales(str(order.pk))
    age(order, 120)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert maintenance.cancel_stale_orders() == {"cancelled": 0}

    assert reload(order).status == Status.PAID
    product.refresh_from_db()
    assert (product.stock, product.units_sold) == (3, 2)
    assert callbacks == []


def test_a_failed_order_is_cancelled_through_the_cancellation_workflow_without_releasing_its_stock_twice(
    deliveries, django_capture_on_commit_callbacks
):
    """Through the workflow, whose refund step asks the gateway: a charge that turned up after the
    order failed is refunded (tests/integration/test_cancellation.py); here none did: voided."""
    product = make_product(stock=5)
    order = place(product, 2)
    services.settle_step(order.pk, "charge_payment", State.FAILURE, error="TransientProviderError: timeout")
    with django_capture_on_commit_callbacks(execute=True):
        services.stop_after_failure(str(order.pk))  # failed: stock released already
    assert reload(order).status == Status.FAILED and stock_of(product) == 5
    age(order, 61)

    with django_capture_on_commit_callbacks(execute=False):  # the workflow is not sent here
        assert maintenance.cancel_stale_orders() == {"cancelled": 1}
        assert maintenance.cancel_stale_orders() == {"cancelled": 0}  # one cancellation

    order = reload(order)
    assert (order.status, order.failure_reason) == (Status.CANCELLING, "it was not paid within 60 minutes.")
    event = OrderEvent.objects.get(order=order, kind="request_cancel")
    assert (event.actor, event.from_status) == ("job:cancel_stale_orders", Status.FAILED)
    cancellation.refund_payment(str(order.pk))
    cancellation.release_stock(str(order.pk))
    assert reload(order).payment.status == Payment.Status.VOIDED
    assert stock_of(product) == 5
    assert deliveries == [f"order:{order.pk}:failed:email"]  # told by the workflow's chord, not here


@pytest.mark.parametrize(
    ("minutes_ago", "status"),
    [
        pytest.param(59, Status.PENDING, id="placed-recently"),
        pytest.param(61, Status.PROCESSING, id="charge-at-the-gateway"),
        pytest.param(61, Status.PAID, id="paid"),
        pytest.param(61, Status.CONFIRMED, id="confirmed"),
        pytest.param(61, Status.ON_HOLD, id="on-hold"),
    ],
)
def test_orders_that_are_recent_being_charged_or_paid_are_left_alone(
    minutes_ago, status, deliveries, django_capture_on_commit_callbacks
):
    product = make_product(stock=5)
    order = placed(product, 1, minutes_ago=minutes_ago, status=status)

    with django_capture_on_commit_callbacks(execute=True):
        assert maintenance.cancel_stale_orders() == {"cancelled": 0}

    assert reload(order).status == status
    assert stock_of(product) == 4
    assert deliveries == [] and not Notification.objects.exists()
    assert not OrderEvent.objects.exists()


def test_an_order_a_worker_starts_charging_after_the_job_picked_it_is_not_cancelled(
    monkeypatch, deliveries, django_capture_on_commit_callbacks
):
    """Each cancel is a conditional transition: the worker that moved the order first wins."""
    product = make_product(stock=5)
    order = placed(product, 1, minutes_ago=61)
    cancel = services.cancel_order

    def worker_wins_the_race(order_id, **kwargs):
        assert lifecycle.move(order_id, lifecycle.START_CHARGE)  # the charge task, meanwhile
        return cancel(order_id, **kwargs)

    monkeypatch.setattr(services, "cancel_order", worker_wins_the_race)
    with django_capture_on_commit_callbacks(execute=True):
        assert maintenance.cancel_stale_orders() == {"cancelled": 0}

    assert reload(order).status == Status.PROCESSING
    assert stock_of(product) == 4
    assert deliveries == []


def test_every_stale_order_is_cancelled_across_batches_even_with_one_skipped(django_capture_on_commit_callbacks):
    product = make_product(stock=10)
    orders = [placed(product, 1, minutes_ago=61, email=f"c{i}@example.com") for i in range(5)]
    lifecycle.move(orders[2], lifecycle.START_CHARGE)

    with django_capture_on_commit_callbacks(execute=False):
        assert maintenance.cancel_stale_orders(batch_size=2) == {"cancelled": 4}

    assert [reload(o).status for o in orders].count(Status.CANCELLED) == 4
    assert reload(orders[2]).status == Status.PROCESSING
    assert stock_of(product) == 9


def test_a_cancellation_email_that_failed_transiently_is_sent_again_by_the_recovery_job(
    monkeypatch, deliveries, django_capture_on_commit_callbacks
):
    # Replaces the stale-order job's own e-mail retry: the notice is an outbox row, delivered by
    # its own task; a lost or failed delivery is picked up by recover_stuck_workflows.
    order = placed(make_product(stock=5), 1, minutes_ago=61)
    with django_capture_on_commit_callbacks(execute=True):
        maintenance.cancel_stale_orders()
    [key] = deliveries

    def mail_server_down(**kwargs):
        raise TransientProviderError("Mail server unavailable")

    with monkeypatch.context() as patch, pytest.raises(TransientProviderError):
        patch.setattr(notifications, "send_with_django_mail", mail_server_down)
        notifications.deliver(key)
    notice = Notification.objects.get(idempotency_key=key)
    assert (notice.status, notice.locked_until) == (Notification.Status.PENDING, None)
    Notification.objects.filter(pk=notice.pk).update(created_at=timezone.now() - timedelta(minutes=11))

    assert maintenance.recover_stuck_workflows() == {"messages": [key]}
    assert deliveries == [key, key]
    notifications.deliver(key)
    notifications.deliver(key)
    assert [(m.to, m.subject) for m in mail.outbox] == [
        (["grace@example.com"], f"Your order {order.number} was cancelled")
    ]


# recover_stuck_workflows


def test_a_stuck_order_has_its_whole_workflow_sent_again_with_new_task_ids(django_capture_on_commit_callbacks):
    order = placed(make_product(), minutes_ago=11)
    old_ids = list(TaskRecord.objects.about(order).values_list("task_id", flat=True))

    with django_capture_on_commit_callbacks() as callbacks:
        resent = maintenance.recover_stuck_workflows()

    assert resent == {order.number: WORKFLOW_STEPS}
    assert len(callbacks) == 1  # the workflow, sent once the transaction commits
    assert set(old_ids).isdisjoint(order.steps.values_list("task_id", flat=True))
    # The runs it replaces no longer look queued or waiting in the task console.
    assert set(TaskRecord.objects.filter(task_id__in=old_ids).values_list("state", flat=True)) == {SKIPPED}
    assert reload(order).status == Status.PENDING


def test_only_the_steps_that_did_not_succeed_are_sent_again(django_capture_on_commit_callbacks):
    order = place(make_product())
    services.charge_payment(str(order.pk))
    age(order, 30)
    WorkflowStep.objects.filter(order=order).update(finished_at=timezone.now() - timedelta(minutes=20))

    with django_capture_on_commit_callbacks():
        resent = maintenance.recover_stuck_workflows()

    assert resent == {order.number: WORKFLOW_STEPS[1:]}
    assert order.steps.get(name="charge_payment").state == State.SUCCESS


def test_an_order_whose_charge_worker_died_at_the_gateway_is_charged_again_not_cancelled(
    django_capture_on_commit_callbacks,
):
    # Processing is never stale: the charge is sent again under the same idempotency key.
    order = placed(make_product(), minutes_ago=90, status=Status.PROCESSING)

    with django_capture_on_commit_callbacks(execute=False):
        assert maintenance.cancel_stale_orders() == {"cancelled": 0}
        assert maintenance.recover_stuck_workflows() == {order.number: WORKFLOW_STEPS}

    assert reload(order).status == Status.PROCESSING


def started_lately(order: Order) -> None:
    TaskRecord.objects.about(order).filter(task_name="orders.tasks.charge_payment").update(
        state=states.STARTED, started_at=timezone.now() - timedelta(minutes=2)
    )


@pytest.mark.parametrize(
    ("setup", "status"),
    [
        pytest.param(started_lately, Status.PENDING, id="started-lately"),
        pytest.param(
            lambda order: TaskRecord.objects.create(
                task_id="t-1",
                task_name="orders.tasks.charge_payment",
                sent_at=timezone.now(),
                **subjects.of_object(order),
            ),
            Status.PENDING,
            id="sent-again-lately",
        ),
        pytest.param(
            lambda order: WorkflowStep.objects.filter(order=order, name="create_shipment").update(
                state=State.SUCCESS, finished_at=timezone.now() - timedelta(minutes=2)
            ),
            Status.PAID,
            id="step-settled-lately",
        ),
        pytest.param(lambda order: None, Status.FAILED, id="failed"),
        pytest.param(lambda order: None, Status.ON_HOLD, id="on-hold"),
        pytest.param(lambda order: None, Status.CONFIRMED, id="confirmed"),
        pytest.param(lambda order: None, Status.CANCELLED, id="cancelled"),
        pytest.param(lambda order: age(order, 61), Status.PENDING, id="unpaid-past-the-stale-limit"),
    ],
)
def test_orders_that_moved_lately_are_not_active_or_are_due_for_cancelling_are_not_sent_again(
    setup, status, django_capture_on_commit_callbacks
):
    order = placed(make_product(), minutes_ago=11, status=status)
    setup(order)
    steps = dict(order.steps.values_list("name", "task_id"))

    with django_capture_on_commit_callbacks() as callbacks:
        assert maintenance.recover_stuck_workflows() == {}
    assert callbacks == []
    assert dict(order.steps.values_list("name", "task_id")) == steps
    assert reload(order).status == status


def test_a_paid_order_stuck_past_the_stale_limit_is_still_sent_again(django_capture_on_commit_callbacks):
    order = placed(make_product(), minutes_ago=90, status=Status.PAID)

    with django_capture_on_commit_callbacks():
        assert list(maintenance.recover_stuck_workflows()) == [order.number]


def test_messages_nobody_is_sending_are_delivered_again_and_only_those(deliveries, django_capture_on_commit_callbacks):
    order = place(make_product())
    for step in (services.charge_payment, services.create_shipment, services.record_sales, services.confirm_order):
        step(str(order.pk))
    long_ago, now = timezone.now() - timedelta(minutes=30), timezone.now()
    Notification.objects.filter(order=order).update(created_at=long_ago)
    email, sms = (f"order:{order.pk}:confirmation:{channel}" for channel in ("email", "sms"))
    Notification.objects.filter(idempotency_key=sms).update(locked_until=now + timedelta(minutes=1))  # being sent
    recent = place(make_product())
    for step in (services.charge_payment, services.create_shipment, services.record_sales, services.confirm_order):
        step(str(recent.pk))

    with django_capture_on_commit_callbacks(execute=True):
        assert maintenance.recover_stuck_workflows() == {"messages": [email]}

    assert deliveries == [email]


# settle_task_records


def test_task_records_a_dead_worker_left_behind_are_settled_from_the_steps():
    long_ago, lately = timezone.now() - timedelta(minutes=30), timezone.now() - timedelta(minutes=2)
    confirmed, held, running = (place(make_product(stock=5)) for _ in range(3))
    for order, state in ((confirmed, State.SUCCESS), (held, State.FAILURE)):
        WorkflowStep.objects.filter(order=order, name="record_sales").update(state=state, finished_at=long_ago)
    WorkflowStep.objects.filter(order=held, name="confirm_order").update(state=State.SKIPPED, finished_at=long_ago)
    WorkflowStep.objects.filter(order=running, name="record_sales").update(state=State.SUCCESS, finished_at=lately)
    # The worker died before writing its run's end: the history still says running.
    TaskRecord.objects.filter(task_name="orders.tasks.record_sales").update(state=states.STARTED)

    assert maintenance.settle_task_records(minutes=10) == 3

    def record(order: Order, step: str) -> TaskRecord:
        return TaskRecord.objects.get(task_id=order.steps.get(name=step).task_id)

    assert record(confirmed, "record_sales").state == states.SUCCESS
    assert record(held, "record_sales").state == states.FAILURE
    assert record(held, "confirm_order").state == SKIPPED
    assert record(running, "record_sales").state == states.STARTED  # settled lately: its own record may follow
    assert record(confirmed, "create_shipment").state != states.SUCCESS  # an unsettled step is not touched
    assert maintenance.settle_task_records(minutes=10) == 0


def test_a_cancellation_never_sent_is_sent_again_unless_a_step_waits_for_staff(django_capture_on_commit_callbacks):
    stuck, dead_lettered = place(make_product()), place(make_product())
    with django_capture_on_commit_callbacks(execute=False):
        for order in (stuck, dead_lettered):
            cancellation.request(order.pk, actor="customer")  # its canvas never reached the broker
            age(order, 11)
            order.steps.update(finished_at=timezone.now() - timedelta(minutes=11))  # marked not run then
    TaskRecord.objects.about(dead_lettered).filter(task_name="orders.tasks.refund_payment").update(state=states.FAILURE)

    with django_capture_on_commit_callbacks(execute=False) as sent:
        resent = maintenance.recover_stuck_workflows()

    assert resent == {stuck.number: ["cancellation"]}
    assert len(sent) == 1  # the cancellation canvas, once committed
    refunds = TaskRecord.objects.about(stuck).filter(task_name="orders.tasks.refund_payment")
    assert refunds.count() == 2
    assert OrderEvent.objects.get(order=stuck, kind="resume_cancel").actor == "job:recover_stuck_workflows"
