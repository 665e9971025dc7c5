"""The demo payment gateway and card number validation."""

from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured

from orders.models import DemoGatewayCharge
from orders.payments import DemoGateway, InvalidCard, PaymentDeclined, get_gateway, normalize_card_number
from tests.factories import DECLINED_CARD, GOOD_CARD


@pytest.mark.parametrize(
    ("raw", "digits"),
    [
        ("4242424242424242", "4242424242424242"),
        ("4242 4242 4242 4242", "4242424242424242"),
        ("4242-4242-4242-4242", "4242424242424242"),
        ("5555 5555 5555 4444", "5555555555554444"),
        ("3782 822463 10005", "378282246310005"),  # 15-digit Amex test number
    ],
)
def test_normalize_card_number_accepts_luhn_valid_numbers_with_separators(raw, digits):
    assert normalize_card_number(raw) == digits


@pytest.mark.parametrize("raw", ["4242 4242 4242 4241", "1234 5678 9012 3456", "4000 0000 0000 0001"])
def test_normalize_card_number_rejects_a_failed_checksum(raw):
    with pytest.raises(InvalidCard, match="checksum"):
        normalize_card_number(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "42424242424",  # 11 digits
        "42424242424242424242",  # 20 digits
        "4242 4242 4242 424X",
        "4242/4242/4242/4242",
        "４２４２４２４２４２４２４２４２",  # full-width digits are not card digits
    ],
)
def test_normalize_card_number_rejects_what_cannot_be_a_card(raw):
    with pytest.raises(InvalidCard, match="12 to 19 digits"):
        normalize_card_number(raw)


def test_tokenize_keeps_only_the_last_four_digits():
    card = DemoGateway().tokenize(GOOD_CARD)

    assert card.last4 == "4242"
    assert "4242424242424242" not in card.token


def test_tokenize_refuses_an_invalid_card():
    with pytest.raises(InvalidCard):
        DemoGateway().tokenize("4242 4242 4242 4241")


@pytest.mark.django_db
def test_charge_records_one_charge_and_returns_its_reference():
    gateway = DemoGateway()
    token = gateway.tokenize(GOOD_CARD).token

    reference = gateway.charge(token=token, amount=Decimal("31.40"), idempotency_key="order:1:charge")

    charge = DemoGatewayCharge.objects.get()
    assert charge.reference == reference
    assert (charge.idempotency_key, charge.amount, charge.card_token, charge.requests) == (
        "order:1:charge",
        Decimal("31.40"),
        token,
        1,
    )


@pytest.mark.django_db
def test_charge_with_a_repeated_idempotency_key_returns_the_first_charge_and_counts_the_request():
    gateway = DemoGateway()
    token = gateway.tokenize(GOOD_CARD).token

    first = gateway.charge(token=token, amount=Decimal("10.00"), idempotency_key="order:1:charge")
    second = gateway.charge(token=token, amount=Decimal("10.00"), idempotency_key="order:1:charge")
    other = gateway.charge(token=token, amount=Decimal("10.00"), idempotency_key="order:2:charge")

    assert second == first
    assert other != first
    assert DemoGatewayCharge.objects.get(idempotency_key="order:1:charge").requests == 2
    assert DemoGatewayCharge.objects.get(idempotency_key="order:2:charge").requests == 1
    assert DemoGatewayCharge.objects.count() == 2


@pytest.mark.django_db
def test_the_decline_card_is_declined_and_nothing_is_charged():
    gateway = DemoGateway()
    token = gateway.tokenize(DECLINED_CARD).token

    with pytest.raises(PaymentDeclined, match="declined"):
        gateway.charge(token=token, amount=Decimal("10.00"), idempotency_key="order:1:charge")

    assert not DemoGatewayCharge.objects.exists()


def test_get_gateway_returns_the_demo_gateway_with_the_configured_latency(settings):
    settings.PAYMENT_GATEWAY = "demo"
    settings.PAYMENT_DEMO_LATENCY = 0.25

    gateway = get_gateway()

    assert isinstance(gateway, DemoGateway)
    assert gateway.latency == 0.25


def test_get_gateway_refuses_an_unknown_provider(settings):
    settings.PAYMENT_GATEWAY = "stripe"

    with pytest.raises(ImproperlyConfigured, match="stripe"):
        get_gateway()
