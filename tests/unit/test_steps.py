"""Retry backoff, and the WorkflowStep record each step task keeps (task functions called directly)."""

import pytest
from celery import states

from orders import tasks
from orders.checkout import Customer, place_order
from orders.models import Order, Shipment, WorkflowStep
from orders.payments import PaymentDeclined
from shop.errors import TransientProviderError
from tasks_admin.base import retry_countdown
from tests.factories import DECLINED_CARD, GOOD_CARD, make_product
from tests.fakes.sms_gateway import FakeSmsGateway

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


# WorkflowStepTask bookkeeping


@pytest.fixture
def local_providers(settings, tmp_path):
    settings.PAYMENT_DEMO_LATENCY = 0
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SMS_PROVIDER = "file"
    settings.SMS_FILE_PATH = str(tmp_path / "sms.log")
    return settings


def place(card_number: str = GOOD_CARD) -> Order:
    return place_order(
        customer=Customer(name="Katherine Johnson", email="kj@example.com", phone="+17575550100"),
        shipping_address="Langley",
        items=[(make_product(stock=5).sku, 1)],
        card_number=card_number,
    )


def step(order: Order, name: str) -> WorkflowStep:
    return WorkflowStep.objects.get(order=order, name=name)


@pytest.mark.django_db
def test_a_step_run_directly_is_recorded_as_succeeded_once(local_providers):
    order = place()
    planned_task_id = step(order, "create_shipment").task_id

    reference = tasks.create_shipment(str(order.pk))

    recorded = step(order, "create_shipment")
    assert reference == Shipment.objects.get(order=order).reference
    assert (recorded.state, recorded.attempts, recorded.error) == (states.SUCCESS, 1, "")
    assert recorded.started_at is not None
    assert recorded.finished_at is not None
    assert recorded.finished_at >= recorded.started_at
    assert recorded.task_id == planned_task_id  # a direct call keeps the workflow's task id
    assert step(order, "charge_payment").state == states.PENDING  # only this step is touched


@pytest.mark.django_db
def test_a_step_run_again_does_nothing_twice(local_providers):
    # A redelivered message runs the step again: its service's business key makes that harmless.
    order = place()
    reference = tasks.create_shipment(str(order.pk))

    assert tasks.create_shipment(str(order.pk)) == reference

    recorded = step(order, "create_shipment")
    assert (recorded.state, recorded.attempts) == (states.SUCCESS, 2)
    assert Shipment.objects.filter(order=order).count() == 1


@pytest.mark.django_db
def test_a_permanent_error_records_the_step_as_failed_with_the_error(local_providers):
    order = place(card_number=DECLINED_CARD)

    with pytest.raises(PaymentDeclined):
        tasks.charge_payment(str(order.pk))

    recorded = step(order, "charge_payment")
    assert (recorded.state, recorded.attempts) == (states.FAILURE, 1)
    assert "PaymentDeclined" in recorded.error
    assert "declined" in recorded.error
    assert recorded.finished_at is not None


@pytest.mark.django_db
def test_a_transient_error_records_a_retry_and_the_next_attempt_succeeds(local_providers):
    order = place()
    with FakeSmsGateway() as gateway:
        local_providers.SMS_PROVIDER, local_providers.SMS_HTTP_URL = "http", gateway.url
        gateway.script(503)

        with pytest.raises(TransientProviderError):
            tasks.send_confirmation_sms(str(order.pk))
        retrying = step(order, "send_confirmation_sms")
        assert (retrying.state, retrying.attempts, retrying.finished_at) == (states.RETRY, 1, None)
        assert "TransientProviderError" in retrying.error
        assert "503" in retrying.error

        tasks.send_confirmation_sms(str(order.pk))

    recorded = step(order, "send_confirmation_sms")
    assert (recorded.state, recorded.attempts, recorded.error) == (states.SUCCESS, 2, "")
    assert [r.status for r in gateway.received()] == [503, 200]


@pytest.mark.django_db
def test_a_transient_error_on_the_last_retry_records_the_step_as_failed(local_providers):
    order = place()
    task = tasks.send_confirmation_sms
    with FakeSmsGateway() as gateway:
        local_providers.SMS_PROVIDER, local_providers.SMS_HTTP_URL = "http", gateway.url
        gateway.script(503)
        task.push_request(retries=task.max_retries)
        try:
            with pytest.raises(TransientProviderError):
                task(str(order.pk))
        finally:
            task.pop_request()

    recorded = step(order, "send_confirmation_sms")
    assert recorded.state == states.FAILURE
    assert "503" in recorded.error
    assert recorded.finished_at is not None
