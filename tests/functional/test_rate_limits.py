"""Abuse limits (orders/ratelimit.py) on checkout, the lookup and cancellation: 429 with Retry-After,
in JSON for the API and as a page for the storefront, counted per client across processes (a
database table) and, for the lookup, per order number; configured from the environment."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from orders import ratelimit
from orders.checkout import Customer, place_order
from orders.models import Order, RateCounter
from settings.env import env_rate
from tests.factories import GOOD_CARD, make_product, order_payload

pytestmark = [pytest.mark.django_db, pytest.mark.rate_limits]


@pytest.fixture
def limits(settings, monkeypatch):
    monkeypatch.setattr(ratelimit, "clock", lambda: 1_000_000.0)  # a slow test run must not cross a window
    settings.RATE_LIMITS = {"checkout": (2, 60), "lookup": (3, 60), "lookup_order": (2, 600), "cancel": (1, 60)}
    return settings.RATE_LIMITS


def place() -> Order:
    return place_order(
        customer=Customer(name="Ada", email="ada@example.com", phone="+15550100001"),
        shipping_address="1 Street",
        items=[(make_product().sku, 1)],
        card_number=GOOD_CARD,
    )


def test_the_api_checkout_answers_429_with_retry_after_in_json(client: Client, limits):
    product = make_product(stock=10)
    answers = [
        client.post("/api/orders/", order_payload((product, 1)), content_type="application/json") for _ in range(3)
    ]

    assert [a.status_code for a in answers] == [202, 202, 429]
    body = answers[2].json()
    assert 1 <= int(answers[2]["Retry-After"]) <= 60 and body["retry_after"] == int(answers[2]["Retry-After"])
    assert "Too many" in body["message"] and body["errors"]
    assert Order.objects.count() == 2


def test_the_checkout_page_says_so_clearly(client: Client, limits):
    for _ in range(2):
        client.post("/checkout/", {})
    response = client.post("/checkout/", {})

    assert response.status_code == 429 and response["Retry-After"]
    assert "Please wait" in response.content.decode() and 'role="alert"' in response.content.decode()


def test_each_client_has_its_own_count(client: Client, limits):
    for _ in range(3):
        client.post("/orders/find/", {"number": "SO-00000-0000A", "email": "a@example.com"})
    blocked = client.post("/orders/find/", {"number": "SO-00000-0000B", "email": "a@example.com"})
    other = client.post("/orders/find/", {"number": "SO-00000-0000C", "email": "a@example.com"}, REMOTE_ADDR="10.0.0.9")

    assert blocked.status_code == 429 and other.status_code == 404


def test_an_order_number_is_limited_whoever_asks(client: Client, limits):
    order = place()
    for n in range(2):
        client.post("/orders/find/", {"number": order.number, "email": "x@example.com"}, REMOTE_ADDR=f"10.0.1.{n}")

    # Even the right e-mail, from a fresh address: the number has been guessed at too often.
    response = client.post(
        "/api/orders/lookup/",
        {"number": order.number, "email": "ada@example.com"},
        content_type="application/json",
        REMOTE_ADDR="10.0.1.99",
    )
    assert response.status_code == 429 and response["Retry-After"]


def test_cancelling_is_limited(client: Client, limits):
    order = place()
    assert client.post(f"/api/orders/{order.pk}/cancel/", content_type="application/json").status_code == 202
    assert client.post(f"/orders/{order.pk}/cancel/", {}).status_code == 429


def test_a_new_window_starts_afresh_and_old_windows_are_deleted(limits, monkeypatch):
    for _ in range(3):
        ratelimit.hit("lookup", "10.0.0.1", now=1000.0)
    with pytest.raises(ratelimit.RateLimited) as refused:
        ratelimit.hit("lookup", "10.0.0.1", now=1010.0)
    assert refused.value.retry_after == 10  # the window of 60 s began at 960, ends at 1020

    monkeypatch.setattr(ratelimit, "CLEANUP_CHANCE", 1.0)
    monkeypatch.setattr(ratelimit.settings, "RATE_LIMITS", {"lookup": (3, 60)})
    ratelimit.hit("lookup", "10.0.0.1", now=1100.0)  # a later window; the one that ended is deleted
    assert list(RateCounter.objects.values_list("window_start", "hits")) == [(1080, 1)]


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("RATE_LIMIT_LOOKUP", "7/30")
    assert env_rate("RATE_LIMIT_LOOKUP", "10/300") == (7, 30)
    monkeypatch.setenv("RATE_LIMIT_LOOKUP", "lots")
    with pytest.raises(ImproperlyConfigured, match="RATE_LIMIT_LOOKUP"):
        env_rate("RATE_LIMIT_LOOKUP", "10/300")
