"""What the task console offers on an order's workflow tasks, and what each action does
(orders/console.py): the order decides. For every task × order status × run state, the offers
are the README's table; an action not offered is refused and changes nothing."""

import uuid

import pytest
from celery import states
from django.utils import timezone

from notifications.models import Notification
from orders import cancellation, lifecycle, services, workflow
from orders.checkout import Customer, place_order
from orders.errors import MessageCancelled
from orders.models import Order, OrderEvent, WorkflowStep
from shop.models import Product
from tasks_admin import console, subjects
from tasks_admin.console import Action
from tasks_admin.models import PLANNED, SKIPPED, TaskAction, TaskRecord, subject_key
from tasks_admin.services import ActionRefused
from tests.factories import GOOD_CARD, make_product, reach

pytestmark = pytest.mark.django_db

Status = Order.Status
CHARGE = workflow.task_name("charge_payment")
FULFILMENT = [workflow.task_name(step) for step in ("create_shipment", "record_sales", "confirm_order")]
MESSAGES = [workflow.task_name(message) for message in workflow.MESSAGES]
ON_ERROR = workflow.task_name(workflow.ON_ERROR)
QUEUED = (PLANNED, states.PENDING, states.RETRY)
# A run's state; "FAILURE/resolved": failed, and dealt with already (retried or resolved).
RUN_STATES = [PLANNED, states.PENDING, states.STARTED, states.RETRY, states.SUCCESS, states.FAILURE]
RUN_STATES += ["FAILURE/resolved", states.REVOKED, "REVOKED/resolved", SKIPPED]


@pytest.fixture(autouse=True)
def local_providers(settings, tmp_path):
    settings.PAYMENT_DEMO_LATENCY = 0
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SMS_PROVIDER = "file"
    settings.SMS_FILE_PATH = str(tmp_path / "sms.log")


@pytest.fixture
def staff_user(django_user_model):
    """Staff acting in the console (the admin checks the permissions; the owner decides the meaning).
    No password: hashing one is most of a test's time."""
    return django_user_model.objects.create_user("staff", is_staff=True)


def expected_offers(task_name: str, status: str, run_state: str) -> set[Action]:
    """The README's table of console actions on an order's tasks, written out."""
    state, _, resolved = run_state.partition("/")
    failed_unresolved = state in (states.FAILURE, states.REVOKED) and not resolved
    if task_name == ON_ERROR:  # idempotent: Celery's own meaning (a run dealt with is not retried again)
        if state in (states.FAILURE, states.REVOKED):
            return {Action.RETRY} if not resolved else set()
        return {Action.REVOKE} if state in QUEUED else {Action.TERMINATE} if state == states.STARTED else set()
    if task_name == CHARGE:
        if status == Status.PENDING and state in QUEUED:
            return {Action.REVOKE}  # = cancel the order
        if status == Status.FAILED and state == states.FAILURE and not resolved:
            return {Action.RETRY}  # = continue the order: reserve again, charge again
        return set()
    if task_name in FULFILMENT:
        if status == Status.PAID and state in QUEUED:
            return {Action.REVOKE}  # = hold the order
        if status == Status.PAID and state == states.STARTED:
            return {Action.TERMINATE}  # = hold the order
        if status == Status.ON_HOLD and failed_unresolved:
            return {Action.RETRY}  # = continue the order
        return set()
    if status != Status.CONFIRMED:  # a message: only once the order is confirmed
        return set()
    if state in QUEUED:
        return {Action.REVOKE}  # = don't send
    if state == states.STARTED:
        return {Action.TERMINATE}  # = stop sending
    return {Action.RETRY} if failed_unresolved else set()  # = send again, to the current address


def place(product: Product | None = None) -> Order:
    return place_order(
        customer=Customer(name="Ada Lovelace", email="ada@example.com", phone="+442079460000"),
        shipping_address="London",
        items=[((product or make_product(stock=5)).sku, 2)],
        card_number=GOOD_CARD,
    )


def order_in(status: str, product: Product | None = None) -> Order:
    """An order in `status` as its workflow, staff or a job leave it: stock, payment, messages."""
    order = place(product)
    order_id = str(order.pk)
    if status in (Status.PAID, Status.CONFIRMED, Status.ON_HOLD):
        services.charge_payment(order_id)
    if status == Status.CONFIRMED:
        for step in (services.create_shipment, services.record_sales, services.confirm_order):
            step(order_id)
    elif status == Status.ON_HOLD:
        services.hold_order(order.pk, actor="staff:setup")
    elif status == Status.CANCELLED:
        services.cancel_order(order.pk, reason="setup", actor="staff:setup")
    elif status == Status.CANCELLING:
        cancellation.request(order.pk, actor="staff:setup")
    elif status == Status.FAILED:
        services.settle_step(order.pk, "charge_payment", WorkflowStep.State.FAILURE, error="RuntimeError: setup")
        services.stop_after_failure(order_id)
    elif status == Status.PROCESSING:
        reach(order, status)
    order.refresh_from_db()
    assert order.status == status
    return order


def record_of(order: Order, task_name: str, run_state: str) -> TaskRecord:
    """The order's run of `task_name` (the error callback's made up: the checkout records the rest)."""
    if task_name == ON_ERROR:
        record = TaskRecord.objects.create(
            task_id=str(uuid.uuid4()),
            task_name=ON_ERROR,
            args=[str(order.pk)],
            sent_at=timezone.now(),
            **subjects.of_object(order),
        )
    else:
        record = TaskRecord.objects.about(order).get(task_name=task_name)
    state, _, resolved = run_state.partition("/")
    TaskRecord.objects.filter(pk=record.pk).update(state=state, resolved_at=timezone.now() if resolved else None)
    return TaskRecord.objects.get(pk=record.pk)


def snapshot(order: Order, product: Product) -> dict:
    """What a customer or staff could tell changed: the order, its stock, steps, messages, history."""
    order.refresh_from_db()
    return {
        "order": (order.status, order.failure_reason, order.stock_released_at, order.sales_recorded_at),
        "stock": Product.objects.values_list("stock", "units_sold").get(pk=product.pk),
        "steps": list(order.steps.values_list("name", "state", "task_id")),
        "messages": list(
            Notification.objects.filter(order=order).values_list("idempotency_key", "status", "recipient")
        ),
        "events": OrderEvent.objects.filter(order=order).count(),
        "tasks": list(TaskRecord.objects.about(order).order_by("pk").values_list("state", "resolved_at")),
        "actions": TaskAction.objects.count(),
    }


TASKS = [CHARGE, *FULFILMENT, *MESSAGES, ON_ERROR]


@pytest.mark.parametrize("status", Status.values)
@pytest.mark.parametrize("task_name", TASKS, ids=[name.rpartition(".")[2] for name in TASKS])
def test_the_console_offers_what_the_order_allows_and_refuses_the_rest_changing_nothing(
    task_name, status, staff_user, django_capture_on_commit_callbacks
):
    product = make_product(stock=5)
    order = order_in(status, product)
    wrong = []
    for run_state in RUN_STATES:  # one order per status: the run's state is set in turn
        record = record_of(order, task_name, run_state)

        offers = console.offers(record)

        offered = {offer.action for offer in offers}
        if offered != expected_offers(task_name, status, run_state):
            wrong.append(
                f"{run_state}: offers {sorted(offered)}, not {sorted(expected_offers(task_name, status, run_state))}"
            )
        assert all(offer.label and offer.title for offer in offers)
        before = snapshot(order, product)
        for action in set(Action) - offered:
            with django_capture_on_commit_callbacks(execute=False) as sent, pytest.raises(ActionRefused):
                console.perform(action, record, user=staff_user, reason="forged")
            assert sent == [], (run_state, action)  # nothing sent, revoked or re-sent
            assert snapshot(order, product) == before, (run_state, action)
    assert wrong == []


# What each offered action does


def test_revoking_the_queued_charge_of_a_pending_order_cancels_it_not_charged_stock_released_customer_told(
    staff_user, django_capture_on_commit_callbacks, deliveries
):
    product = make_product(stock=5)
    order = place(product)
    record = record_of(order, CHARGE, states.PENDING)
    [offer] = console.offers(record)
    assert offer.label == "Cancel order"

    with django_capture_on_commit_callbacks(execute=False) as sent:
        done = console.perform(Action.REVOKE, record, user=staff_user, reason="customer phoned").message

    assert "Cancelled order" in done
    order.refresh_from_db()
    assert order.status == Status.CANCELLED
    assert Product.objects.get(pk=product.pk).stock == 5
    assert TaskRecord.objects.get(pk=record.pk).state == states.REVOKED  # a worker receiving it skips it
    assert set(order.steps.values_list("state", flat=True)) == {WorkflowStep.State.SKIPPED}
    assert Notification.objects.get(order=order).idempotency_key == f"order:{order.pk}:cancelled:email"
    assert len(sent) == 2  # the cancellation notice's delivery and the workers' revoke, once committed
    assert OrderEvent.objects.get(order=order, kind="cancel").user == staff_user
    assert TaskAction.objects.get(task=record).kind == TaskAction.Kind.REVOKE


@pytest.mark.parametrize(
    ("action", "run_state"), [(Action.REVOKE, PLANNED), (Action.REVOKE, states.PENDING), (Action.TERMINATE, "STARTED")]
)
def test_revoking_or_terminating_a_step_of_a_paid_order_puts_it_on_hold_stock_kept_nothing_told(
    action, run_state, staff_user, django_capture_on_commit_callbacks
):
    product = make_product(stock=5)
    order = order_in(Status.PAID, product)
    record = record_of(order, workflow.task_name("create_shipment"), run_state)

    with django_capture_on_commit_callbacks(execute=False):
        done = console.perform(action, record, user=staff_user, reason="address check").message

    assert "on hold" in done
    order.refresh_from_db()
    assert (order.status, order.stock_released_at) == (Status.ON_HOLD, None)
    assert Product.objects.get(pk=product.pk).stock == 3
    assert not Notification.objects.filter(order=order).exists()
    event = OrderEvent.objects.get(order=order, kind="hold")
    assert (event.user, event.note) == (staff_user, "address check")
    # ...and the step can then be retried: continuing the order.
    assert [offer.action for offer in console.offers(TaskRecord.objects.get(pk=record.pk))] == (
        [Action.RETRY] if action == Action.REVOKE else []  # a terminated run is revoked by its worker's report
    )


def test_retrying_a_failed_step_of_an_order_on_hold_continues_the_order(staff_user, django_capture_on_commit_callbacks):
    order = order_in(Status.PAID)
    services.create_shipment(str(order.pk))
    services.settle_step(order.pk, "record_sales", WorkflowStep.State.FAILURE, error="RuntimeError: db")
    services.stop_after_failure(str(order.pk))
    record = record_of(order, workflow.task_name("record_sales"), states.FAILURE)

    with django_capture_on_commit_callbacks(execute=False) as sent:
        done = console.perform(Action.RETRY, record, user=staff_user, reason="fixed").message

    assert done == f"Continued order {order.number}: sent record_sales, confirm_order again."
    assert Order.objects.get(pk=order.pk).status == Status.PAID
    assert len(sent) == 1  # the rest of the workflow
    assert TaskRecord.objects.get(pk=record.pk).resolved_at is not None  # dealt with: not a dead letter
    assert TaskAction.objects.filter(kind=TaskAction.Kind.CONTINUE_WORKFLOW, subject_id=subject_key(order)).exists()


def test_retrying_the_failed_charge_of_a_failed_order_reserves_its_stock_and_charges_again(
    staff_user, django_capture_on_commit_callbacks
):
    product = make_product(stock=5)
    order = order_in(Status.FAILED, product)
    assert Product.objects.get(pk=product.pk).stock == 5
    record = record_of(order, CHARGE, states.FAILURE)

    with django_capture_on_commit_callbacks(execute=False) as sent:
        console.perform(Action.RETRY, record, user=staff_user)

    assert Order.objects.get(pk=order.pk).status == Status.PENDING
    assert Product.objects.get(pk=product.pk).stock == 3
    assert len(sent) == 1


def test_retrying_the_charge_of_a_failed_order_whose_stock_is_gone_is_refused_with_the_reason(staff_user):
    product = make_product(stock=2)
    order = order_in(Status.FAILED, product)
    place_order(
        customer=Customer(name="B", email="b@example.com", phone="+442079460001"),
        shipping_address="x",
        items=[(product.sku, 2)],
        card_number=GOOD_CARD,
    )
    record = record_of(order, CHARGE, states.FAILURE)

    with pytest.raises(ActionRefused, match="Only 0"):
        console.perform(Action.RETRY, record, user=staff_user)

    assert Order.objects.get(pk=order.pk).status == Status.FAILED


@pytest.mark.parametrize(("action", "run_state"), [(Action.REVOKE, states.PENDING), (Action.TERMINATE, "STARTED")])
def test_stopping_a_confirmation_message_means_it_is_not_sent(
    action, run_state, staff_user, django_capture_on_commit_callbacks
):
    order = order_in(Status.CONFIRMED)
    record = record_of(order, workflow.task_name("send_confirmation_sms"), run_state)

    with django_capture_on_commit_callbacks(execute=False):
        done = console.perform(action, record, user=staff_user).message

    assert done == f"The sms for order {order.number} will not be sent."
    assert Notification.objects.get(order=order, channel="sms").status == Notification.Status.CANCELLED
    assert Notification.objects.get(order=order, channel="email").status == Notification.Status.PENDING
    with pytest.raises(MessageCancelled):  # the task, should a worker run it anyway, is refused
        services.send_confirmation(str(order.pk), "sms")
    assert Notification.objects.get(order=order, channel="sms").status == Notification.Status.CANCELLED
    assert Order.objects.get(pk=order.pk).status == Status.CONFIRMED


def test_sending_a_refused_message_again_goes_to_the_corrected_address(staff_user, django_capture_on_commit_callbacks):
    order = order_in(Status.CONFIRMED)
    Notification.objects.filter(order=order, channel="sms").update(status=Notification.Status.FAILED, error="400")
    Order.objects.filter(pk=order.pk).update(phone="+442079460555")  # staff corrected the number
    record = record_of(order, workflow.task_name("send_confirmation_sms"), states.FAILURE)

    with django_capture_on_commit_callbacks(execute=False) as sent:
        done = console.perform(Action.RETRY, record, user=staff_user).message

    assert done.startswith("Sending the sms to +442079460555 again")
    sms = Notification.objects.get(order=order, channel="sms")
    assert (sms.status, sms.recipient, sms.error) == (Notification.Status.PENDING, "+442079460555", "")
    assert len(sent) == 1
    assert TaskRecord.objects.get(pk=record.pk).resolved_at is not None


def test_the_console_does_not_say_a_message_already_sent_will_not_be_sent(
    staff_user, django_capture_on_commit_callbacks
):
    order = order_in(Status.CONFIRMED)
    services.send_confirmation(str(order.pk), "sms")  # delivered by the recovery job meanwhile
    record = record_of(order, workflow.task_name("send_confirmation_sms"), states.PENDING)  # still queued

    with django_capture_on_commit_callbacks(execute=False):
        try:
            done = console.perform(Action.REVOKE, record, user=staff_user).message
        except ActionRefused:
            done = "refused"

    assert Notification.objects.get(order=order, channel="sms").status == Notification.Status.SENT
    assert "will not be sent" not in done


def test_the_error_callback_keeps_celerys_meaning(staff_user, django_capture_on_commit_callbacks):
    order = order_in(Status.PAID)
    record = record_of(order, ON_ERROR, states.FAILURE)

    with django_capture_on_commit_callbacks(execute=False) as sent:
        done = console.perform(Action.RETRY, record, user=staff_user).message

    assert done.startswith(f"Sent {ON_ERROR} again as task ")
    assert len(sent) == 1
    assert Order.objects.get(pk=order.pk).status == Status.PAID


def test_an_offer_that_no_longer_holds_is_refused(staff_user, django_capture_on_commit_callbacks):
    # Staff asked to cancel the order; between reading it and cancelling it, the worker started
    # charging it: the state machine's conditional transition refuses the cancel.
    order = place()
    record = record_of(order, CHARGE, states.PENDING)
    assert console.offers(record)
    lifecycle.move(order.pk, lifecycle.START_CHARGE)  # `record.order` still says pending

    with django_capture_on_commit_callbacks(execute=False) as sent, pytest.raises(ActionRefused):
        console.perform(Action.REVOKE, record, user=staff_user)

    assert sent == []
    assert Order.objects.get(pk=order.pk).status == Status.PROCESSING
