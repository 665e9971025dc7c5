"""The JSON API over HTTP: GET /api/products/, POST /api/orders/, GET /api/orders/<id>/.

Each test runs in a TestCase transaction: on_commit callbacks never run, so no broker
is involved; the workflow dispatch is only captured and counted, never executed.
"""

import json
import re
import uuid
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from notifications.models import Notification
from orders import cancellation, services
from orders.models import Order, OrderLine, Payment, WorkflowStep
from shop.models import Product
from tasks_admin.models import TaskRecord
from tests.factories import GOOD_CARD, make_category, make_product, order_payload, reach
from tests.support import WORKFLOW_STEPS

pytestmark = pytest.mark.django_db

PRODUCTS_URL = "/api/products/"
ORDERS_URL = "/api/orders/"


def post_json(client: Client, payload, url: str = ORDERS_URL):
    return client.post(url, payload, content_type="application/json")


def post_raw(client: Client, body: bytes | str, content_type: str = "application/json"):
    # CONTENT_TYPE set explicitly: the test client leaves it out when the body is empty.
    return client.generic("POST", ORDERS_URL, body, content_type=content_type, CONTENT_TYPE=content_type)


def stock_of(product: Product) -> int:
    return Product.objects.values_list("stock", flat=True).get(pk=product.pk)


def assert_nothing_placed(*products_and_stock: tuple[Product, int]) -> None:
    """No order or any of its parts exists, and no stock was reserved."""
    assert Order.objects.count() == 0
    assert OrderLine.objects.count() == 0
    assert Payment.objects.count() == 0
    assert WorkflowStep.objects.count() == 0
    for product, stock in products_and_stock:
        assert stock_of(product) == stock, product.sku


def assert_error_body(response, status: int, key: str) -> list[str]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert key in body["errors"], body
    messages = body["errors"][key]
    assert isinstance(messages, list) and messages and all(isinstance(m, str) and m for m in messages)
    assert isinstance(body["message"], str) and body["message"]
    return messages


# --------------------------------------------------------------------------- products


def test_product_list_returns_each_product_with_price_from_the_database(client):
    category = make_category()
    product = make_product(name="Blue Mug", price="7.5", stock=4, category=category)

    response = client.get(PRODUCTS_URL)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["next"] is None
    assert body["results"] == [
        {
            "sku": product.sku,
            "name": "Blue Mug",
            "price": "7.50",  # a string decimal, with the column's two places
            "stock": 4,
            "url": f"http://testserver/products/{product.slug}/",
        }
    ]


def test_product_list_reflects_current_database_values_and_urls_resolve(client):
    product = make_product(name="Kettle", price="20.00", stock=9)
    Product.objects.filter(pk=product.pk).update(price=Decimal("18.99"), stock=2)

    [item] = client.get(PRODUCTS_URL).json()["results"]

    assert (item["price"], item["stock"]) == ("18.99", 2)
    page = client.get(item["url"])
    assert page.status_code == 200
    assert "Kettle" in page.content.decode()


def test_product_list_is_sorted_by_name(client):
    category = make_category()
    for name in ("Cherry", "apple pie", "Banana"):
        make_product(name=name, category=category)

    names = [item["name"] for item in client.get(PRODUCTS_URL).json()["results"]]

    assert names == sorted(names) and set(names) == {"Cherry", "apple pie", "Banana"}


def test_product_list_paginates_by_50_with_absolute_next_links_ending_in_null(client):
    category = make_category()
    skus = {make_product(name=f"Widget {n:03d}", category=category).sku for n in range(55)}

    first = client.get(PRODUCTS_URL).json()
    assert len(first["results"]) == 50
    assert first["next"] == "http://testserver/api/products/?page=2"

    second = client.get(first["next"]).json()
    assert len(second["results"]) == 5
    assert second["next"] is None
    assert {item["sku"] for item in first["results"] + second["results"]} == skus


def test_product_list_next_link_keeps_the_filters(client):
    widgets, other = make_category(), make_category()
    for n in range(52):
        make_product(name=f"Widget {n:03d}", category=widgets)
    make_product(name="Widget outsider", category=other)
    make_product(name="Gadget", category=widgets)

    first = client.get(PRODUCTS_URL, {"q": "widget", "category": widgets.slug}).json()
    assert len(first["results"]) == 50
    assert first["next"].startswith("http://testserver/api/products/?")
    assert "q=widget" in first["next"] and f"category={widgets.slug}" in first["next"]

    second = client.get(first["next"]).json()
    assert [item["name"] for item in second["results"]] == ["Widget 050", "Widget 051"]
    assert second["next"] is None


@pytest.mark.parametrize("page", ["abc", "0", "-1", "999"])
def test_product_list_with_a_bad_page_number_still_answers_200(client, page):
    make_product(name="Only one")

    response = client.get(PRODUCTS_URL, {"page": page})

    assert response.status_code == 200
    assert [item["name"] for item in response.json()["results"]] == ["Only one"]


def test_product_list_q_matches_name_case_insensitively_and_exact_sku(client):
    category = make_category()
    mug = make_product(name="Blue Mug", category=category)
    plate = make_product(name="Dinner Plate", category=category)
    make_product(name="Teapot", category=category)

    def skus(**params) -> list[str]:
        return [item["sku"] for item in client.get(PRODUCTS_URL, params).json()["results"]]

    assert skus(q="mug") == [mug.sku]
    assert skus(q="  MUG ") == [mug.sku]
    assert skus(q=plate.sku.lower()) == [plate.sku]
    assert skus(q=plate.sku[:-1]) == []  # SKUs match only exactly
    assert skus(q="no such thing") == []


def test_product_list_filters_by_category_slug(client):
    kitchen, garden = make_category(), make_category()
    pan = make_product(name="Pan", category=kitchen)
    make_product(name="Rake", category=garden)

    results = client.get(PRODUCTS_URL, {"category": kitchen.slug}).json()["results"]

    assert [item["sku"] for item in results] == [pan.sku]


def test_product_list_with_an_unknown_category_lists_nothing(client):
    make_product(name="Pan")

    response = client.get(PRODUCTS_URL, {"category": "no-such-category"})

    assert response.status_code == 200
    assert response.json()["results"] == []


def test_inactive_products_are_never_listed(client):
    category = make_category()
    hidden = make_product(name="Hidden Lamp", category=category)
    Product.objects.filter(pk=hidden.pk).update(active=False)
    shown = make_product(name="Shown Lamp", category=category)

    for params in ({}, {"q": "lamp"}, {"q": hidden.sku}, {"category": category.slug}):
        results = client.get(PRODUCTS_URL, params).json()["results"]
        assert hidden.sku not in [item["sku"] for item in results], params
    assert [item["sku"] for item in client.get(PRODUCTS_URL, {"q": "lamp"}).json()["results"]] == [shown.sku]


# --------------------------------------------------------------------------- order create: success


def test_create_order_returns_202_and_reserves_stock_at_database_prices(client, django_capture_on_commit_callbacks):
    mug = make_product(price="12.50", stock=10)
    plate = make_product(price="3.99", stock=5)
    payload = order_payload((mug, 2), (plate, 3))
    # A client may send prices and totals; the shop must ignore them.
    for item in payload["items"]:
        item["price"] = "0.01"
        item["unit_price"] = "0.01"
    payload["total"] = "0.02"
    payload["customer"]["phone"] = "+44 (20) 7946-0958"

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_json(client, payload)

    assert response.status_code == 202, response.content
    body = response.json()
    order = Order.objects.get()
    assert body["id"] == str(order.pk)
    assert body["number"] == order.number
    assert re.fullmatch(r"SO-[0-9A-Z]{5}-[0-9A-Z]{5}", body["number"])
    assert body["status"] == "pending"
    assert body["status_url"] == f"http://testserver/api/orders/{order.pk}/"

    assert order.status == Order.Status.PENDING
    assert order.total == Decimal("36.97")  # 2 × 12.50 + 3 × 3.99
    assert order.customer_name == payload["customer"]["name"]
    assert order.email == payload["customer"]["email"]
    assert order.phone == "+442079460958"
    lines = {line.sku: (line.unit_price, line.quantity) for line in order.lines.all()}
    assert lines == {mug.sku: (Decimal("12.50"), 2), plate.sku: (Decimal("3.99"), 3)}
    assert (stock_of(mug), stock_of(plate)) == (8, 2)
    payment = Payment.objects.get(order=order)
    assert payment.amount == Decimal("36.97")
    assert payment.card_last4 == "4242"
    assert "4242424242424242" not in payment.card_token
    assert order.steps.count() == len(WORKFLOW_STEPS)
    assert not Notification.objects.exists()  # the customer hears of the outcome, not of the checkout
    assert len(callbacks) == 1  # the workflow is sent once, after commit


def test_create_order_uses_the_current_database_price(client):
    product = make_product(price="10.00", stock=5)
    Product.objects.filter(pk=product.pk).update(price=Decimal("11.25"))

    response = post_json(client, order_payload((product, 2)))

    assert response.status_code == 202, response.content
    assert Order.objects.get().total == Decimal("22.50")


def test_create_order_accepts_json_with_a_charset(client):
    product = make_product(stock=2)

    response = post_raw(client, json.dumps(order_payload((product, 1))), "application/json; charset=utf-8")

    assert response.status_code == 202, response.content
    assert stock_of(product) == 1


def test_duplicate_skus_are_merged_into_one_line(client):
    product = make_product(price="2.00", stock=10)

    response = post_json(client, order_payload((product, 2), (product, 3)))

    assert response.status_code == 202, response.content
    order = Order.objects.get()
    assert [(line.sku, line.quantity) for line in order.lines.all()] == [(product.sku, 5)]
    assert order.total == Decimal("10.00")
    assert stock_of(product) == 5


def test_duplicate_skus_cannot_exceed_the_per_line_quantity_limit(client):
    product = make_product(stock=1000)

    response = post_json(client, order_payload((product, 100), (product, 100)))

    assert response.status_code == 400, response.content
    assert_nothing_placed((product, 1000))


def test_the_api_needs_no_csrf_token(django_capture_on_commit_callbacks):
    product = make_product(stock=3)
    csrf_client = Client(enforce_csrf_checks=True)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_json(csrf_client, order_payload((product, 1)))

    assert response.status_code == 202, response.content
    assert Order.objects.count() == 1
    assert len(callbacks) == 1


# --------------------------------------------------------------------------- order create: validation


def _set(path: str, value):
    """A payload change: set the value at a dotted path ("customer.name", "items.0.quantity")."""

    def change(payload: dict) -> None:
        *parents, last = path.split(".")
        target = payload
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[int(last) if isinstance(target, list) else last] = value

    return change


def _drop(path: str):
    def change(payload: dict) -> None:
        *parents, last = path.split(".")
        target = payload
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        del target[last]

    return change


VALIDATION_CASES = {
    # customer
    "customer.name empty": (_set("customer.name", "   "), {"customer.name"}),
    "customer.name missing": (_drop("customer.name"), {"customer.name"}),
    "customer.name number": (_set("customer.name", 123), {"customer.name"}),
    "customer.name list": (_set("customer.name", ["Ann"]), {"customer.name"}),
    "customer.name too long": (_set("customer.name", "x" * 201), {"customer.name"}),
    "customer.email invalid": (_set("customer.email", "not-an-email"), {"customer.email"}),
    "customer.email missing": (_drop("customer.email"), {"customer.email"}),
    "customer.email number": (_set("customer.email", 42), {"customer.email"}),
    "customer.phone no country code": (_set("customer.phone", "020 7946 0958"), {"customer.phone"}),
    "customer.phone letters": (_set("customer.phone", "+44 phone"), {"customer.phone"}),
    "customer.phone too short": (_set("customer.phone", "+12345"), {"customer.phone"}),
    "customer.phone number": (_set("customer.phone", 442079460958), {"customer.phone"}),
    "customer string": (_set("customer", "Ann"), {"customer", "customer.name", "customer.email", "customer.phone"}),
    "customer list": (_set("customer", []), {"customer", "customer.name", "customer.email", "customer.phone"}),
    "customer null": (_set("customer", None), {"customer", "customer.name", "customer.email", "customer.phone"}),
    # shipping address
    "shipping_address empty": (_set("shipping_address", ""), {"shipping_address"}),
    "shipping_address missing": (_drop("shipping_address"), {"shipping_address"}),
    "shipping_address object": (_set("shipping_address", {"street": "x"}), {"shipping_address"}),
    "shipping_address too long": (_set("shipping_address", "x" * 1001), {"shipping_address"}),
    # card
    "card_number checksum": (_set("card_number", "4242 4242 4242 4241"), {"card_number"}),
    "card_number letters": (_set("card_number", "abcd efgh ijkl mnop"), {"card_number"}),
    "card_number too short": (_set("card_number", "4242"), {"card_number"}),
    "card_number integer": (_set("card_number", 4242424242424242), {"card_number"}),
    "card_number missing": (_drop("card_number"), {"card_number"}),
    # items
    "items missing": (_drop("items"), {"items"}),
    "items empty": (_set("items", []), {"items"}),
    "items string": (_set("items", "SKU-1"), {"items"}),
    "items object": (_set("items", {"sku": "SKU-1", "quantity": 1}), {"items"}),
    "item not an object": (_set("items.0", "SKU-1"), {"items[0]"}),
    "items[0].sku number": (_set("items.0.sku", 123), {"items[0].sku"}),
    "items[0].sku empty": (_set("items.0.sku", ""), {"items[0].sku"}),
    "items[0].sku too long": (_set("items.0.sku", "S" * 33), {"items[0].sku"}),
    "items[0].sku missing": (_drop("items.0.sku"), {"items[0].sku"}),
    "items[0].quantity 0": (_set("items.0.quantity", 0), {"items[0].quantity"}),
    "items[0].quantity -1": (_set("items.0.quantity", -1), {"items[0].quantity"}),
    "items[0].quantity 101": (_set("items.0.quantity", 101), {"items[0].quantity"}),
    "items[0].quantity 10**30": (_set("items.0.quantity", 10**30), {"items[0].quantity"}),
    "items[0].quantity 1.5": (_set("items.0.quantity", 1.5), {"items[0].quantity"}),
    "items[0].quantity 2.0": (_set("items.0.quantity", 2.0), {"items[0].quantity"}),
    "items[0].quantity '2'": (_set("items.0.quantity", "2"), {"items[0].quantity"}),
    "items[0].quantity true": (_set("items.0.quantity", True), {"items[0].quantity"}),
    "items[0].quantity null": (_set("items.0.quantity", None), {"items[0].quantity"}),
    "items[0].quantity missing": (_drop("items.0.quantity"), {"items[0].quantity"}),
}


@pytest.mark.parametrize(("change", "keys"), list(VALIDATION_CASES.values()), ids=list(VALIDATION_CASES))
def test_invalid_order_is_rejected_with_400_naming_the_field(client, django_capture_on_commit_callbacks, change, keys):
    product = make_product(stock=5)
    payload = order_payload((product, 1))
    change(payload)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_json(client, payload)

    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert set(errors) == keys
    for key in keys:
        assert_error_body(response, 400, key)
    assert_nothing_placed((product, 5))
    assert callbacks == []


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (_set("customer.name", 123), "customer.name", "Give a string."),
        (_set("customer.phone", "12345"), "customer.phone", "Enter the phone number in international format"),
        (_set("customer.email", "nope"), "customer.email", "Enter a valid email address."),
        (_set("card_number", "4242 4242 4242 4241"), "card_number", "checksum failed"),
        (_set("items.0.quantity", 0), "items[0].quantity", "Quantity must be between 1 and 100."),
        (_set("items.0.quantity", 1.5), "items[0].quantity", "Give the quantity as a whole number."),
        (_set("items.0.sku", 7), "items[0].sku", "Give the product's SKU as a string."),
    ],
)
def test_validation_messages_explain_the_problem(client, change, key, message):
    product = make_product(stock=5)
    payload = order_payload((product, 1))
    change(payload)

    messages = assert_error_body(post_json(client, payload), 400, key)

    assert message in " ".join(messages)


def test_every_invalid_field_is_reported_at_once(client):
    product = make_product(stock=5)
    payload = order_payload((product, 1))
    payload["customer"]["email"] = "nope"
    payload["card_number"] = "123"
    payload["items"].append({"sku": product.sku, "quantity": "3"})

    response = post_json(client, payload)

    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"customer.email", "card_number", "items[1].quantity"}
    assert_nothing_placed((product, 5))


def test_more_than_50_items_are_rejected(client):
    products = [make_product(stock=5, category=make_category()) for _ in range(51)]

    response = post_json(client, order_payload(*((p, 1) for p in products)))

    assert "At most 50 items" in " ".join(assert_error_body(response, 400, "items"))
    assert_nothing_placed(*((p, 5) for p in products))


def test_50_items_are_accepted(client):
    category = make_category()
    products = [make_product(stock=5, category=category) for _ in range(50)]

    response = post_json(client, order_payload(*((p, 1) for p in products)))

    assert response.status_code == 202, response.content
    assert Order.objects.get().lines.count() == 50


def test_unknown_sku_is_rejected_and_nothing_is_reserved(client):
    product = make_product(stock=5)
    payload = order_payload((product, 1))
    payload["items"].append({"sku": "NO-SUCH-SKU", "quantity": 1})

    messages = assert_error_body(post_json(client, payload), 400, "items")

    assert "NO-SUCH-SKU" in " ".join(messages)
    assert_nothing_placed((product, 5))


def test_inactive_product_cannot_be_ordered(client):
    product = make_product(stock=5)
    Product.objects.filter(pk=product.pk).update(active=False)

    messages = assert_error_body(post_json(client, order_payload((product, 1))), 400, "items")

    assert product.sku in " ".join(messages)
    assert_nothing_placed((product, 5))


BAD_BODIES = {
    "invalid JSON": b'{"customer": ',
    "not UTF-8": b'{"customer": "\xff\xfe"}',
    "empty body": b"",
    "JSON array": b"[]",
    "JSON array of an order": b'[{"items": []}]',
    "JSON string": b'"order"',
    "JSON number": b"42",
    "JSON null": b"null",
    "deeply nested array": b"[" * 100_000,
    "deeply nested object": b'{"a":' * 40_000 + b"1" + b"}" * 40_000,  # 240 kB: under the size cap
    "deeply nested, closed": b"[" * 100_000 + b"]" * 100_000,
    "nested inside the order": b'{"customer": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "integer too long to parse": b'{"items": [{"sku": "X", "quantity": ' + b"9" * 5000 + b"}]}",
}


@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_a_body_that_is_not_a_json_object_is_a_400_not_a_500(client, body):
    product = make_product(stock=5)

    response = post_raw(client, body)

    assert_error_body(response, 400, "body")
    assert_nothing_placed((product, 5))


def test_an_oversized_body_is_rejected_with_413(client):
    product = make_product(stock=5)
    payload = order_payload((product, 1))
    payload["shipping_address"] = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 256 * 1024

    response = post_json(client, payload)

    assert_error_body(response, 413, "body")
    assert_nothing_placed((product, 5))


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "application/xml"],
)
def test_a_body_that_is_not_declared_json_is_rejected_with_415(client, content_type):
    product = make_product(stock=5)

    response = post_raw(client, json.dumps(order_payload((product, 1))), content_type)

    assert_error_body(response, 415, "body")
    assert_nothing_placed((product, 5))


def test_a_form_post_is_rejected_with_415(client):
    product = make_product(stock=5)

    response = client.post(ORDERS_URL, {"card_number": GOOD_CARD})

    assert_error_body(response, 415, "body")
    assert_nothing_placed((product, 5))


# --------------------------------------------------------------------------- order create: stock


def test_insufficient_stock_is_a_409_with_the_numbers(client):
    product = make_product(name="Rare Vase", stock=3)

    response = post_json(client, order_payload((product, 5)))

    assert response.status_code == 409, response.content
    body = response.json()
    assert body["sku"] == product.sku
    assert (body["requested"], body["available"]) == (5, 3)
    assert "Only 3 of Rare Vase" in body["message"]
    assert_nothing_placed((product, 3))


def test_out_of_stock_product_is_a_409_with_nothing_available(client):
    product = make_product(stock=0)

    response = post_json(client, order_payload((product, 1)))

    assert response.status_code == 409
    assert (response.json()["requested"], response.json()["available"]) == (1, 0)
    assert_nothing_placed((product, 0))


def test_insufficient_stock_on_one_line_reserves_nothing_on_the_others(client, django_capture_on_commit_callbacks):
    plenty = make_product(stock=10)  # lower pk: reserved first, then rolled back
    scarce = make_product(stock=1)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_json(client, order_payload((plenty, 2), (scarce, 2)))

    assert response.status_code == 409
    assert response.json()["sku"] == scarce.sku
    assert_nothing_placed((plenty, 10), (scarce, 1))
    assert callbacks == []


def test_duplicate_skus_are_summed_before_checking_stock(client):
    product = make_product(stock=10)

    response = post_json(client, order_payload((product, 6), (product, 6)))

    assert response.status_code == 409
    assert (response.json()["requested"], response.json()["available"]) == (12, 10)
    assert_nothing_placed((product, 10))


def test_stock_runs_out_across_orders(client):
    product = make_product(stock=3)

    assert post_json(client, order_payload((product, 2))).status_code == 202
    second = post_json(client, order_payload((product, 2)))

    assert second.status_code == 409
    assert second.json()["available"] == 1
    assert Order.objects.count() == 1
    assert stock_of(product) == 1


# --------------------------------------------------------------------------- methods and unknown paths


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_other_methods_on_the_orders_collection_are_405_with_allow(client, method):
    product = make_product(stock=5)

    response = client.generic(method, ORDERS_URL, json.dumps(order_payload((product, 1))), "application/json")

    assert_error_body(response, 405, "method")
    assert response["Allow"] == "POST"
    assert_nothing_placed((product, 5))


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_products_only_answer_get(client, method):
    response = client.generic(method, PRODUCTS_URL, "{}", "application/json")

    assert_error_body(response, 405, "method")
    assert response["Allow"] == "GET"


def test_order_detail_only_answers_get(client):
    product = make_product(stock=5)
    order_id = post_json(client, order_payload((product, 1))).json()["id"]

    response = client.delete(f"{ORDERS_URL}{order_id}/")

    assert_error_body(response, 405, "method")
    assert response["Allow"] == "GET"
    assert Order.objects.filter(pk=order_id).exists()


@pytest.mark.parametrize(
    "path",
    [
        "/api/nothing-here/",
        "/api/products/extra/",
        f"/api/orders/{uuid.uuid4()}/",
        "/api/orders/not-a-uuid/",
        "/api/orders/12345/",
        "/api/orders/00000000-0000-0000-0000-00000000000g/",
    ],
)
def test_unknown_api_paths_are_404_json(client, path):
    response = client.get(path)

    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["errors"]


# --------------------------------------------------------------------------- order detail


def test_order_detail_shows_status_total_and_pending_steps(client):
    product = make_product(price="12.50", stock=5)
    created = post_json(client, order_payload((product, 2))).json()

    response = client.get(created["status_url"])

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == created["id"]
    assert body["number"] == created["number"]
    assert body["status"] == "pending"
    assert body["total"] == "25.00"
    assert [step["name"] for step in body["steps"]] == WORKFLOW_STEPS
    task_ids = set()
    for step in body["steps"]:
        assert step["state"] == "PENDING"
        assert (step["started_at"], step["finished_at"], step["attempts"], step["error"]) == (None, None, 0, "")
        assert isinstance(step["task_id"], str) and step["task_id"]
        task_ids.add(step["task_id"])
    assert len(task_ids) == len(WORKFLOW_STEPS)
    assert set(task_ids) == set(WorkflowStep.objects.values_list("task_id", flat=True))
    assert body["notifications"] == []  # nothing is said to the customer before the outcome


def confirm(order_id: str) -> None:
    """Charge, ship, count and confirm the order, as its workflow does."""
    for step in (services.charge_payment, services.create_shipment, services.record_sales, services.confirm_order):
        step(order_id)


def test_order_detail_lists_notifications_with_channel_status_and_recipient(client, settings):
    settings.PAYMENT_DEMO_LATENCY = 0
    product = make_product(stock=5)
    payload = order_payload((product, 1))
    order_id = post_json(client, payload).json()["id"]
    email, phone = payload["customer"]["email"], payload["customer"]["phone"]
    confirm(order_id)
    queued = client.get(f"{ORDERS_URL}{order_id}/").json()["notifications"]
    Notification.objects.filter(order_id=order_id, channel="email").update(status="sent")

    notifications = client.get(f"{ORDERS_URL}{order_id}/").json()["notifications"]

    # The confirmation queued both messages; the workflow's last two tasks send them.
    assert [(n["channel"], n["status"], n["to"]) for n in queued] == [
        ("email", "pending", email),
        ("sms", "pending", phone),
    ]
    assert [(n["channel"], n["status"], n["to"]) for n in notifications] == [
        ("email", "sent", email),
        ("sms", "pending", phone),
    ]


def test_the_live_status_shows_the_payment_refunded_while_cancelling_and_once_cancelled(client, settings, monkeypatch):
    """What the order page polls (orders/static/orders/order_live.js): the payment taken, then
    refunded by the cancellation's first step while the order is still cancelling (the page keeps
    polling fast: `moving`), then the order cancelled; the cancel offer gone once asked."""
    settings.PAYMENT_DEMO_LATENCY = 0
    monkeypatch.setattr(cancellation.cancellation_workflow, "start", lambda order: {})  # its steps run here
    order_id = post_json(client, order_payload((make_product(stock=5), 1))).json()["id"]
    services.charge_payment(order_id)
    url = f"{ORDERS_URL}{order_id}/"
    paid = client.get(url).json()
    assert paid["payment"] == {"status": "captured", "label": "taken", "refunded_at": None} and paid["cancellable"]

    cancellation.request(order_id, actor="customer")
    cancellation.refund_payment(order_id)
    refunding = client.get(url).json()
    assert (refunding["status"], refunding["moving"], refunding["final"]) == ("cancelling", True, False)
    assert refunding["payment"]["status"] == "refunded" and refunding["payment"]["label"] == "refunded"
    assert refunding["payment"]["refunded_at"] and refunding["cancellable"] is False

    cancellation.release_stock(order_id)
    cancellation.record_cancellation_sales(order_id)
    cancellation.finish(order_id)
    done = client.get(url).json()
    assert (done["status"], done["final"], done["payment"]["status"]) == ("cancelled", True, "refunded")
    page = client.get(f"/orders/{order_id}/").content.decode()
    assert re.search(r'data-testid="payment-status">refunded<', page)
    assert 'data-testid="cancel-offer"' not in page


def test_a_confirmed_order_shows_every_step_done(client, settings):
    settings.PAYMENT_DEMO_LATENCY = 0
    order_id = post_json(client, order_payload((make_product(stock=5), 1))).json()["id"]
    confirm(order_id)

    body = client.get(f"{ORDERS_URL}{order_id}/").json()

    assert body["status"] == "confirmed"
    assert [(step["name"], step["state"]) for step in body["steps"]] == [(name, "SUCCESS") for name in WORKFLOW_STEPS]
    assert all(step["finished_at"] for step in body["steps"])


@pytest.mark.parametrize("run_state", ["STARTED", "RETRY"])
def test_an_unsettled_step_shows_its_current_run_from_the_task_history(client, run_state):
    order_id = post_json(client, order_payload((make_product(stock=5), 1))).json()["id"]
    charge = WorkflowStep.objects.get(order_id=order_id, name="charge_payment")
    started = timezone.now()
    TaskRecord.objects.filter(task_id=charge.task_id).update(state=run_state, attempts=2, started_at=started)

    body = client.get(f"{ORDERS_URL}{order_id}/").json()

    first, *rest = body["steps"]
    assert (first["name"], first["state"], first["attempts"]) == ("charge_payment", run_state, 2)
    assert first["started_at"] == started.isoformat()
    assert {step["state"] for step in rest} == {"PENDING"}  # waiting: shown as to do


def test_a_settled_step_shows_its_outcome_not_a_stale_run(client):
    # The step's outcome is written with its effect; the run's own record may lag behind.
    order_id = post_json(client, order_payload((make_product(stock=5), 1))).json()["id"]
    order = Order.objects.get(pk=order_id)
    reach(order, Order.Status.CANCELLED)
    WorkflowStep.objects.filter(order=order).update(state="SKIPPED", error="not run: order cancelled")
    TaskRecord.objects.about(order).update(state="STARTED")

    body = client.get(f"{ORDERS_URL}{order_id}/").json()

    assert body["status"] == "cancelled"
    assert {(step["state"], step["error"]) for step in body["steps"]} == {("SKIPPED", "not run: order cancelled")}
