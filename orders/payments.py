"""Payment gateway adapters. The only one shipped is a DEMO provider that moves no money."""

import secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.utils import timezone

from tasks_admin.errors import PermanentProviderError
from tasks_admin.sql import db_value

from .models import DemoGatewayCharge

_LEDGER = DemoGatewayCharge._meta.db_table
_CHARGE_ONCE = (
    f"INSERT INTO {_LEDGER} (idempotency_key, reference, card_token, amount, requests, created_at) "
    "VALUES (%s, %s, %s, %s, 1, %s) "
    f"ON CONFLICT (idempotency_key) DO UPDATE SET requests = {_LEDGER}.requests + 1 RETURNING reference"
)


# A refund is a conditional UPDATE of the charge's row: it is refunded once (refunded_at set),
# every request counted; RETURNING says whether the charge exists at all.
_REFUND_ONCE = (
    f"UPDATE {_LEDGER} SET refund_requests = refund_requests + 1, "
    "refunded_at = COALESCE(refunded_at, %s) WHERE idempotency_key = %s RETURNING reference"
)


class InvalidCard(ValueError):
    """The card number cannot be a card: caught at checkout, before any order exists."""


class PaymentDeclined(PermanentProviderError):
    """The gateway refused the charge; retrying will not change its mind."""


class RefundDeclined(PermanentProviderError):
    """The gateway refused the refund: staff must look (a dead letter), the order stays cancelling."""


@dataclass(frozen=True)
class CardToken:
    token: str
    last4: str


class PaymentGateway(Protocol):
    def tokenize(self, card_number: str) -> CardToken: ...

    def charge(self, *, token: str, amount: Decimal, idempotency_key: str) -> str:
        """Charge the card once per idempotency key; return the gateway's reference."""

    def find_charge(self, *, idempotency_key: str) -> str | None:
        """The reference of the charge made under this key, if one was (its reply may have been lost)."""

    def refund(self, *, idempotency_key: str) -> str:
        """Refund the charge made under this key, in full, at most once however often asked;
        return the charge's reference. RefundDeclined if refused, a TransientError to retry."""


def normalize_card_number(card_number: str) -> str:
    digits = "".join(ch for ch in card_number if ch not in " -")
    if not digits.isascii() or not digits.isdigit() or not 12 <= len(digits) <= 19:
        raise InvalidCard("Enter a card number of 12 to 19 digits.")
    total = 0
    for position, ch in enumerate(reversed(digits)):
        value = int(ch)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    if total % 10:
        raise InvalidCard("This card number is not valid (checksum failed).")
    return digits


class DemoGateway:
    """DEMO payment provider: no money moves and every card is fake.

    Any Luhn-valid number is charged, after `latency` seconds, except the decline card
    4000 0000 0000 0002. Its ledger (DemoGatewayCharge) plays the provider's side.
    """

    DECLINE_CARD = "4000000000000002"
    _DECLINE_PREFIX = "demo_decline_"

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency

    def tokenize(self, card_number: str) -> CardToken:
        digits = normalize_card_number(card_number)
        prefix = self._DECLINE_PREFIX if digits == self.DECLINE_CARD else "demo_"
        return CardToken(token=prefix + secrets.token_hex(12), last4=digits[-4:])

    def charge(self, *, token: str, amount: Decimal, idempotency_key: str) -> str:
        if self.latency:
            time.sleep(self.latency)
        if token.startswith(self._DECLINE_PREFIX):
            raise PaymentDeclined("The card was declined (demo decline card 4000 0000 0000 0002).")
        # One statement, as a gateway's own ledger would do it: charge a key once, count repeats.
        with connection.cursor() as cursor:
            cursor.execute(
                _CHARGE_ONCE,
                [
                    idempotency_key,
                    "ch_demo_" + secrets.token_hex(10),
                    token,
                    db_value(DemoGatewayCharge, "amount", amount),
                    db_value(DemoGatewayCharge, "created_at", timezone.now()),
                ],
            )
            return cursor.fetchone()[0]

    def find_charge(self, *, idempotency_key: str) -> str | None:
        return (
            DemoGatewayCharge.objects.filter(idempotency_key=idempotency_key)
            .values_list("reference", flat=True)
            .first()
        )

    def refund(self, *, idempotency_key: str) -> str:
        if self.latency:
            time.sleep(self.latency)
        with connection.cursor() as cursor:
            cursor.execute(_REFUND_ONCE, [db_value(DemoGatewayCharge, "refunded_at", timezone.now()), idempotency_key])
            row = cursor.fetchone()
        if row is None:
            raise RefundDeclined(f"No charge under {idempotency_key} to refund.")
        return row[0]


def get_gateway() -> PaymentGateway:
    if settings.PAYMENT_GATEWAY == "demo":
        return DemoGateway(latency=settings.PAYMENT_DEMO_LATENCY)
    raise ImproperlyConfigured(f"Unknown PAYMENT_GATEWAY {settings.PAYMENT_GATEWAY!r}; supported: demo")
