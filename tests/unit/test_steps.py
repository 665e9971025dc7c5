"""Retry backoff, and the WorkflowStep record each step task keeps (task functions called directly)."""

import uuid

import pytest
from celery import states
from celery._state import _task_stack
from celery.exceptions import Ignore
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_results.models import ChordCounter

from notifications.models import Notification
from notifications.tasks import deliver_message
from orders import services, tasks, workflow
from orders.checkout import Customer, place_order
from orders.models import Order, Shipment, WorkflowStep
from orders.payments import DemoGateway, PaymentDeclined
from tasks_admin import backend
from tasks_admin.base import retry_countdown, whole_seconds
from tasks_admin.errors import TransientProviderError
from tasks_admin.models import ChordPart, TaskRecord
from tests.factories import DECLINED_CARD, GOOD_CARD, make_product, reach
from tests.fakes.sms_gateway import FakeSmsGateway

State = WorkflowStep.State

# retry_countdown


@pytest.fixture
def backoff(settings):
    settings.TASK_RETRY_BACKOFF = 2.0
    settings.TASK_RETRY_BACKOFF_MAX = 300.0
    return settings


@pytest.mark.parametrize("retries", range(12))
def test_retry_countdown_stays_between_half_and_all_of_the_exponential_ceiling(backoff, retries):
    ceiling = min(backoff.TASK_RETRY_BACKOFF_MAX, backoff.TASK_RETRY_BACKOFF * 2**retries)

    samples = [retry_countdown(retries) for _ in range(100)]

    assert all(ceiling / 2 <= s <= ceiling for s in samples), (ceiling, min(samples), max(samples))


def test_retry_countdown_grows_with_each_retry_until_the_cap(backoff):
    backoff.TASK_RETRY_BACKOFF = 1.0
    backoff.TASK_RETRY_BACKOFF_MAX = 1000.0

    # Equal jitter: retry n+1 never waits less than the most retry n can wait.
    for retries in range(8):
        assert min(retry_countdown(retries + 1) for _ in range(50)) >= max(retry_countdown(retries) for _ in range(50))


def test_retry_countdown_is_capped_by_the_backoff_max(backoff):
    backoff.TASK_RETRY_BACKOFF_MAX = 10.0

    samples = [retry_countdown(50) for _ in range(200)]

    assert all(5.0 <= s <= 10.0 for s in samples)


def test_retry_countdown_waits_at_least_as_long_as_the_provider_asks(backoff):
    backoff.TASK_RETRY_BACKOFF = 1.0

    assert retry_countdown(0, retry_after=45.0) >= 45.0
    assert retry_countdown(2, retry_after=120.0) >= 120.0


def test_a_short_retry_after_does_not_shorten_the_backoff(backoff):
    ceiling = backoff.TASK_RETRY_BACKOFF * 2**6

    samples = [retry_countdown(6, retry_after=1.0) for _ in range(100)]

    assert all(ceiling / 2 <= s <= ceiling for s in samples)


def test_retry_countdown_never_exceeds_the_backoff_max_even_for_a_long_retry_after(backoff):
    backoff.TASK_RETRY_BACKOFF_MAX = 60.0

    assert retry_countdown(0, retry_after=3600.0) <= 60.0


def test_retries_of_tasks_that_failed_together_are_spread_out(backoff):
    ceiling = backoff.TASK_RETRY_BACKOFF * 2**4

    samples = [retry_countdown(4) for _ in range(200)]

    assert len(set(samples)) > 1
    # Spread over the jitter window, not bunched in one corner of it.
    assert max(samples) - min(samples) > ceiling / 4


# WorkflowStepTask bookkeeping: a step's SUCCESS is written by its service with its effect, its
# FAILURE by its task once it fails for good, SKIPPED when its order forbids it; a retry is the
# task history's fact, not the step's.


@pytest.fixture
def local_providers(settings, tmp_path):
    settings.PAYMENT_DEMO_LATENCY = 0
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SMS_PROVIDER = "file"
    settings.SMS_FILE_PATH = str(tmp_path / "sms.log")
    return settings


def place(card_number: str = GOOD_CARD, lines: int = 1) -> Order:
    return place_order(
        customer=Customer(name="Katherine Johnson", email="kj@example.com", phone="+17575550100"),
        shipping_address="Langley",
        items=[(make_product(stock=5).sku, n + 1) for n in range(lines)],
        card_number=card_number,
    )


def paid() -> Order:
    order = place()
    tasks.charge_payment(str(order.pk))
    return order


def confirmed() -> Order:
    order = paid()
    for step in (tasks.create_shipment, tasks.record_sales, tasks.confirm_order):
        step(str(order.pk))
    assert Order.objects.get(pk=order.pk).status == Order.Status.CONFIRMED
    return order


def step(order: Order, name: str) -> WorkflowStep:
    return WorkflowStep.objects.get(order=order, name=name)


def run_as_last_retry(task, *args):
    task.push_request(retries=task.max_retries)
    try:
        return task(*args)
    finally:
        task.pop_request()


class GatewayDown(DemoGateway):
    def charge(self, **kwargs):
        raise TransientProviderError("Payment gateway timed out")


@pytest.mark.django_db
def test_a_step_run_directly_is_recorded_as_succeeded_once(local_providers):
    order = paid()
    planned_task_id = step(order, "create_shipment").task_id

    reference = tasks.create_shipment(str(order.pk))

    recorded = step(order, "create_shipment")
    assert reference == Shipment.objects.get(order=order).reference
    assert (recorded.state, recorded.error) == (State.SUCCESS, "")
    assert recorded.finished_at is not None
    assert recorded.task_id == planned_task_id  # a direct call keeps the workflow's task id
    assert step(order, "record_sales").state == State.PENDING  # only this step is touched


def statements(run) -> list[str]:
    """The SQL `run()` sends, leaving out the test transaction's savepoints."""
    with CaptureQueriesContext(connection) as queries:
        run()
    return [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]


@pytest.mark.django_db
def test_each_step_settles_itself_in_the_statement_of_its_effect(local_providers):
    order = place(lines=3)
    order_id = str(order.pk)

    sent = {name: statements(lambda name=name: getattr(tasks, name)(order_id)) for name in workflow.STEPS}

    assert set(order.steps.values_list("state", flat=True)) == {State.SUCCESS}
    assert Order.objects.get(pk=order.pk).status == Order.Status.CONFIRMED
    if connection.vendor == "postgresql":  # data-modifying WITH clauses; elsewhere the ORM's statements
        # The benchmark's database figure (docs/benchmarks.md). The charge: the payment read by the
        # move to processing, the demo gateway's ledger (the provider's side), the capture with the
        # payment and the step; one statement a fulfilment step; the confirmation: the move that
        # returns the order and its lines with its step settled, its messages.
        assert {name: len(sql) for name, sql in sent.items()} == {
            "charge_payment": 3,
            "create_shipment": 1,
            "record_sales": 1,
            "confirm_order": 2,
        }
    email = Notification.objects.get(order=order, channel=Notification.Channel.EMAIL)
    listed = "".join(f"{n.quantity} × {n.name} ({n.sku})  €{n.line_total}\n" for n in order.lines.order_by("pk"))
    assert listed in email.body  # every line, in the order's order


@pytest.mark.django_db
def test_a_step_run_again_does_nothing_twice(local_providers):
    # A redelivered message runs the step again: its service's business key makes that harmless.
    order = paid()
    reference = tasks.create_shipment(str(order.pk))
    first = step(order, "create_shipment")

    assert tasks.create_shipment(str(order.pk)) == reference

    again = step(order, "create_shipment")
    assert (again.state, again.finished_at) == (State.SUCCESS, first.finished_at)
    assert Shipment.objects.filter(order=order).count() == 1


@pytest.mark.django_db
def test_a_permanent_error_records_the_step_as_failed_with_the_error(local_providers):
    order = place(card_number=DECLINED_CARD)

    with pytest.raises(PaymentDeclined):
        tasks.charge_payment(str(order.pk))

    recorded = step(order, "charge_payment")
    assert recorded.state == State.FAILURE
    assert "PaymentDeclined" in recorded.error
    assert "declined" in recorded.error
    assert recorded.finished_at is not None


@pytest.mark.django_db
@pytest.mark.parametrize("status", [Order.Status.PENDING, Order.Status.CANCELLED, Order.Status.ON_HOLD])
def test_a_step_its_order_forbids_is_recorded_as_not_run_and_ignored(local_providers, status):
    # Ignored: no error callback, no dead letter, the rest of the chain not sent.
    order = reach(place(), status)

    with pytest.raises(Ignore):
        tasks.create_shipment(str(order.pk))

    recorded = step(order, "create_shipment")
    assert recorded.state == State.SKIPPED
    assert "not shipping it" in recorded.error and Order.Status(status).label in recorded.error
    assert not Shipment.objects.filter(order=order).exists()
    assert Order.objects.get(pk=order.pk).status == status


@pytest.mark.django_db
def test_a_late_duplicate_does_not_undo_a_step_that_succeeded(local_providers):
    order = paid()
    tasks.create_shipment(str(order.pk))
    tasks.record_sales(str(order.pk))
    tasks.confirm_order(str(order.pk))

    tasks.create_shipment(str(order.pk))  # redelivered after the order was confirmed

    assert step(order, "create_shipment").state == State.SUCCESS


@pytest.mark.django_db
def test_a_transient_error_leaves_the_step_unsettled_for_its_retry(local_providers, monkeypatch):
    order = place()
    monkeypatch.setattr(services, "get_gateway", GatewayDown)

    with pytest.raises(TransientProviderError):  # called directly, the retry re-raises it
        tasks.charge_payment(str(order.pk))

    recorded = step(order, "charge_payment")
    assert (recorded.state, recorded.error, recorded.finished_at) == (State.PENDING, "", None)

    monkeypatch.undo()
    tasks.charge_payment(str(order.pk))
    assert step(order, "charge_payment").state == State.SUCCESS
    assert Order.objects.get(pk=order.pk).status == Order.Status.PAID


@pytest.mark.django_db
def test_a_transient_error_on_the_last_retry_records_the_step_as_failed(local_providers, monkeypatch):
    order = place()
    monkeypatch.setattr(services, "get_gateway", GatewayDown)

    with pytest.raises(TransientProviderError):
        run_as_last_retry(tasks.charge_payment, str(order.pk))

    recorded = step(order, "charge_payment")
    assert recorded.state == State.FAILURE
    assert "timed out" in recorded.error
    assert recorded.finished_at is not None


@pytest.mark.django_db
def test_a_transient_sms_error_leaves_the_message_queued_and_the_next_attempt_sends_it_once(local_providers):
    order = confirmed()
    with FakeSmsGateway() as gateway:
        local_providers.SMS_PROVIDER, local_providers.SMS_HTTP_URL = "http", gateway.url
        gateway.script(503)

        with pytest.raises(TransientProviderError):
            tasks.send_confirmation_sms(str(order.pk))
        retrying = Notification.objects.get(order=order, channel="sms")
        assert (retrying.status, retrying.attempts) == (Notification.Status.PENDING, 1)
        assert "503" in retrying.error

        tasks.send_confirmation_sms(str(order.pk))
        tasks.send_confirmation_sms(str(order.pk))

    sent = Notification.objects.get(order=order, channel="sms")
    assert (sent.status, sent.attempts, sent.error) == (Notification.Status.SENT, 2, "")
    assert [r.status for r in gateway.received()] == [503, 200]
    assert Order.objects.get(pk=order.pk).status == Order.Status.CONFIRMED


@pytest.mark.django_db
def test_an_sms_still_failing_on_the_last_retry_is_failed_for_staff_and_does_not_touch_the_confirmed_order(
    local_providers,
):
    order = confirmed()
    with FakeSmsGateway() as gateway:
        local_providers.SMS_PROVIDER, local_providers.SMS_HTTP_URL = "http", gateway.url
        gateway.script(503)
        with pytest.raises(TransientProviderError):
            run_as_last_retry(tasks.send_confirmation_sms, str(order.pk))

    # Failed for staff to send again, not left pending for the recovery job to send behind their back.
    sms = Notification.objects.get(order=order, channel="sms")
    assert (sms.status, sms.error) == (Notification.Status.FAILED, "TransientProviderError: SMS gateway error 503")
    assert Order.objects.get(pk=order.pk).status == Order.Status.CONFIRMED
    assert set(order.steps.values_list("state", flat=True)) == {State.SUCCESS}


@pytest.mark.django_db
def test_a_task_staff_revoked_does_not_run_even_if_a_worker_receives_it(local_providers):
    order = confirmed()
    key = Notification.objects.get(order=order, channel="sms").idempotency_key
    TaskRecord.objects.create(
        task_id="revoked-delivery", task_name=deliver_message.name, state=states.REVOKED, sent_at=timezone.now()
    )
    deliver_message.push_request(id="revoked-delivery")
    try:
        with pytest.raises(Ignore, match="revoked"):
            deliver_message(key)
    finally:
        deliver_message.pop_request()

    assert Notification.objects.get(order=order, channel="sms").status == Notification.Status.PENDING


@pytest.mark.django_db
def test_a_message_staff_cancelled_is_refused_by_its_task_without_a_revoke_query(local_providers):
    order = confirmed()
    services.cancel_confirmation(order.pk, "sms")  # what revoking its task does first (orders/console.py)
    tasks.send_confirmation_sms.push_request(id="cancelled-sms")
    try:
        with CaptureQueriesContext(connection) as queries, pytest.raises(Ignore, match="cancelled by staff"):
            tasks.send_confirmation_sms(str(order.pk))
    finally:
        tasks.send_confirmation_sms.pop_request()

    assert not any("tasks_admin_taskrecord" in query["sql"] for query in queries.captured_queries)
    assert Notification.objects.get(order=order, channel="sms").status == Notification.Status.CANCELLED


@pytest.mark.django_db
def test_a_step_staff_revoked_is_refused_by_its_held_order_without_a_revoke_query(local_providers):
    order = paid()
    services.hold_order(order.pk, actor="staff:test")  # what revoking a step does first (orders/console.py)
    task_id = step(order, "create_shipment").task_id
    TaskRecord.objects.filter(task_id=task_id).update(state=states.REVOKED)
    tasks.create_shipment.push_request(id=task_id)
    try:
        with CaptureQueriesContext(connection) as queries, pytest.raises(Ignore, match="on hold"):
            tasks.create_shipment(str(order.pk))
    finally:
        tasks.create_shipment.pop_request()

    assert not any("tasks_admin_taskrecord" in query["sql"] for query in queries.captured_queries)
    assert not Shipment.objects.filter(order=order).exists()
    assert step(order, "create_shipment").state == State.SKIPPED


@pytest.mark.parametrize(("countdown", "sent"), [(0.1, 1), (0.5, 1), (1.0, 1), (1.2, 2), (6.5, 7)])
def test_a_countdown_for_native_delayed_delivery_is_rounded_up_to_whole_seconds(countdown, sent):
    """Celery truncates it and refuses one under a second; rounding up never retries sooner than asked."""
    assert whole_seconds(countdown) == sent


@pytest.mark.django_db(transaction=True)
def test_a_chord_steps_report_commits_with_its_effect_or_not_at_all(local_providers, monkeypatch):
    # The shipment and the sales count report to the workflow's chord in the transaction of their
    # effect, and the callback is sent once the last commits: a crash after an effect can no
    # longer leave the chord a report short, and the pair is one commit. Celery's report after
    # the task returns then writes nothing.
    monkeypatch.setattr(workflow, "publish", lambda order, canvas: True)  # the test runs the steps itself
    order = paid()
    steps = dict(order.steps.values_list("name", "task_id"))
    key = steps["confirm_order"]
    # The chord as the checkout planned it (its counter written with the order: written again, a no-op).
    header = [getattr(tasks, name).si(str(order.pk)).set(task_id=steps[name]) for name in workflow.FULFIL]
    callback = backend.planned_chord(header, tasks.confirm_order.si(str(order.pk)).set(task_id=key)).body
    group_id, fired = str(uuid.uuid4()), []
    chords = tasks.create_shipment.backend
    monkeypatch.setattr(chords, "_fire", lambda request, group_id: fired.append(group_id))

    def run_in_the_chord(task):
        """As a worker runs a header task of the chord: the task current, its request naming the chord."""
        task.push_request(id=steps[task.name.rpartition(".")[2]], group=group_id, chord=dict(callback))
        _task_stack.push(task)
        try:
            return task(str(order.pk)), task.request
        finally:
            _task_stack.pop()
            task.pop_request()

    def counter() -> int:
        return ChordCounter.objects.get(group_id=key).count

    # The report fails (the database gone, the process dying) after the step's effect: neither is kept.
    count_part = chords._count_part
    monkeypatch.setattr(chords, "_count_part", lambda *args: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError, match="killed"):
        run_in_the_chord(tasks.create_shipment)
    assert not Shipment.objects.filter(order=order).exists()
    assert counter() == 2 and not ChordPart.objects.exists()

    # Run again (redelivered): the shipment and its report, together.
    monkeypatch.setattr(chords, "_count_part", count_part)
    reference, request = run_in_the_chord(tasks.create_shipment)
    assert Shipment.objects.get(order=order).reference == reference
    assert counter() == 1 and fired == []
    assert list(ChordPart.objects.values_list("group_id", "task_id")) == [(key, steps["create_shipment"])]
    with CaptureQueriesContext(connection) as queries:
        chords.on_chord_part_return(request, states.SUCCESS, reference)
    assert queries.captured_queries == [] and fired == []

    # The last report: the callback is sent as its transaction commits, before the task returns.
    counted, request = run_in_the_chord(tasks.record_sales)
    assert counted and fired == [key] and counter() == 0
    with CaptureQueriesContext(connection) as queries:
        chords.on_chord_part_return(request, states.SUCCESS, counted)
    assert queries.captured_queries == [] and fired == [key]
    assert step(order, "create_shipment").state == step(order, "record_sales").state == State.SUCCESS

    # A duplicate delivery of a step whose report counted: nothing counted twice, nothing sent again.
    _, request = run_in_the_chord(tasks.record_sales)
    chords.on_chord_part_return(request, states.SUCCESS, False)
    assert fired == [key] and counter() == 0 and ChordPart.objects.count() == 2
