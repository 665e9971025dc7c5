""" "Find my order": order number + checkout e-mail → the order page, on the storefront and the API,
with one answer for every mismatch; and what a third party sees (shipment reference, e-mail
subject, SMS body) does not open an order."""

import hmac
import re

import pytest
from django.test import Client

from notifications.models import Notification
from orders import lookup, messages, services
from orders.checkout import Customer, place_order
from orders.models import Order
from tests.factories import GOOD_CARD, make_product

pytestmark = pytest.mark.django_db

EMAIL = "Grace.Hopper@Example.com"


def result(response) -> str:
    """The text of the page's announced result (its aria-live region)."""
    region = re.search(r'data-testid="lookup-result">(.*?)</div>', response.content.decode(), re.S).group(1)
    return re.sub(r"<[^>]+>", "", region).strip()


def place() -> Order:
    return place_order(
        customer=Customer(name="Grace Hopper", email=EMAIL, phone="+15550100000"),
        shipping_address="1 Navy Yard",
        items=[(make_product().sku, 1)],
        card_number=GOOD_CARD,
    )


def test_the_number_and_the_checkout_email_open_the_order_page(client: Client):
    order = place()

    response = client.post(
        "/orders/find/", {"number": f"  {order.number.lower()} ", "email": "grace.hopper@example.com"}
    )

    assert response.status_code == 302 and response["Location"] == order.get_absolute_url()
    assert client.get(response["Location"]).status_code == 200


def test_a_wrong_number_and_a_wrong_email_get_the_same_answer(client: Client):
    order, other = place(), place()
    wrong_email = client.post("/orders/find/", {"number": order.number, "email": "someone@example.com"})
    wrong_number = client.post("/orders/find/", {"number": "SO-00000-00000", "email": EMAIL})
    others_email = client.post("/orders/find/", {"number": other.number, "email": "someone@example.com"})

    assert wrong_email.status_code == wrong_number.status_code == others_email.status_code == 404
    answers = {result(r) for r in (wrong_email, wrong_number, others_email)}
    assert answers == {lookup.NOT_FOUND}  # word for word the same, whichever was wrong
    assert order.number not in wrong_number.content.decode()


def test_the_page_prefills_the_number_from_the_link_in_a_text(client: Client):
    response = client.get("/orders/find/?number=SO-ABCDE-12345")

    assert response.status_code == 200
    assert 'value="SO-ABCDE-12345"' in response.content.decode()
    assert '<label for="id_email">' in response.content.decode()


def test_bad_input_is_a_clear_400_not_a_500(client: Client):
    response = client.post("/orders/find/", {"number": "x" * 500, "email": "not an address"})
    assert response.status_code == 400
    assert client.post("/api/orders/lookup/", {"number": 7}, content_type="application/json").status_code == 400


def test_the_api_answers_the_order_links_or_one_404(client: Client):
    order = place()

    found = client.post(
        "/api/orders/lookup/", {"number": order.number, "email": EMAIL}, content_type="application/json"
    )
    wrong = client.post(
        "/api/orders/lookup/", {"number": order.number, "email": "x@example.com"}, content_type="application/json"
    )
    missing = client.post(
        "/api/orders/lookup/", {"number": "SO-00000-00000", "email": EMAIL}, content_type="application/json"
    )

    assert found.status_code == 200 and found.json()["id"] == str(order.pk)
    assert found.json()["url"].endswith(order.get_absolute_url())
    assert wrong.status_code == missing.status_code == 404
    assert wrong.json() == missing.json()


def test_the_addresses_are_compared_in_constant_time_even_for_an_unknown_number(client: Client, monkeypatch):
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(lookup.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    order = place()

    lookup.find(order.number, "x@example.com")
    lookup.find("SO-00000-00000", "x@example.com")

    assert len(calls) == 2  # compared whether the number exists or not: no early "no such order"


def test_nothing_a_third_party_sees_opens_the_order(client: Client):
    """The shipment reference, the e-mail's subject and the SMS body: none holds the order's
    private link, and with each of them (the number included) the lookup still asks for the e-mail."""
    order = place()
    services.charge_payment(str(order.pk))
    reference = services.create_shipment(str(order.pk))
    services.record_sales(str(order.pk))
    services.confirm_order(str(order.pk))
    email = Notification.objects.get(order=order, channel=Notification.Channel.EMAIL)
    sms = Notification.objects.get(order=order, channel=Notification.Channel.SMS)

    seen = {"shipment reference": reference, "e-mail subject": email.subject, "SMS body": sms.body}
    for what, text in seen.items():
        assert str(order.pk) not in text and str(order.pk).replace("-", "") not in text, what
        assert order.get_absolute_url() not in text, what
        for guess in ({"number": order.number, "email": text}, {"number": text[:20], "email": text}):
            assert client.post("/orders/find/", guess).status_code in (400, 404), what  # never the order
    assert messages.lookup_url(order) in sms.body  # the text carries the way to the order page
    assert order.get_absolute_url() in email.body and messages.lookup_url(order) in email.body
