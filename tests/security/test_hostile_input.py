"""Hostile input never breaks the shop: property-based tests with hypothesis.

Whatever a client sends — any JSON, bytes that are not JSON, huge or deeply nested bodies,
tampered prices, NUL, lone surrogates and HTML in every field — the shop answers with a
4xx the client can read, creates no order and moves no stock; when it accepts an order,
it charges the catalog's prices. Text an attacker controls is always HTML-escaped.

Each example runs in a savepoint that is rolled back, so every example starts from the
same catalog. on_commit callbacks never run inside the test transaction: no broker is
involved, the workflow is never sent.
"""

import html
import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from urllib.parse import parse_qsl, quote, quote_from_bytes

import pytest
from celery import states
from django.conf import settings as django_settings
from django.db import transaction
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django_celery_results.models import TaskResult
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from orders.models import Order, OrderLine, Payment, WorkflowStep
from shop.cart import MAX_LINE_QUANTITY
from shop.models import Category, Product
from tasks_admin.models import TaskRecord
from tests.factories import DECLINED_CARD, GOOD_CARD

pytestmark = pytest.mark.django_db

ORDERS_URL = "/api/orders/"
SIZE_LIMIT = 256 * 1024


def hostile(max_examples: int) -> settings:
    """Few enough examples that the file runs in well under a minute, on SQLite and PostgreSQL.

    database=None: no .hypothesis/ directory is written into the repository.
    """
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )


# --------------------------------------------------------------------------- the catalog

# sku: (price, stock, active)
CATALOG = {
    "MUG-1": ("12.50", 20, True),
    "PIN-2": ("0.01", 3, True),
    "LAMP-3": ("999.99", 100, True),
    "SOLD-4": ("3.99", 0, True),
    "OLD-5": ("5.00", 10, False),  # no longer sold: ordering it is a 400
}
SKUS = list(CATALOG)
Catalog = dict[str, Product]


@pytest.fixture
def catalog(db: None) -> Catalog:
    category = Category.objects.create(name="Hostile", slug="hostile")
    return {
        sku: Product.objects.create(
            category=category,
            name=f"Product {sku}",
            slug=sku.lower(),
            sku=sku,
            price=Decimal(price),
            stock=stock,
            active=active,
        )
        for sku, (price, stock, active) in CATALOG.items()
    }


@contextmanager
def rolled_back() -> Iterator[None]:
    """One example's writes, undone afterwards: the next example sees the same catalog."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def snapshot() -> tuple[dict[str, int], int, int, int, int]:
    """Everything a rejected request must leave alone: stock, orders, lines, payments, steps."""
    return (
        dict(Product.objects.values_list("sku", "stock")),
        Order.objects.count(),
        OrderLine.objects.count(),
        Payment.objects.count(),
        WorkflowStep.objects.count(),
    )


# --------------------------------------------------------------------------- strategies

NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "MUG-1\x00",
    "\x00<script>",
    "\ud800",  # a lone surrogate: valid as a JSON escape, not storable text
    "MUG-\udfff",
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "' OR '1'='1",
    "%s%s%n",
    "../../etc/passwd",
    "\u202eevil",
    "😀" * 40,
    "Ǆ\u0301\u200d",
    "\r\n\t",
    "1e309",
    "NaN",
    "-0",
    "mug-1",
    " MUG-1 ",
]
# Storable text (no surrogates): what a browser can send in a form.
form_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
surrogates = st.text(st.characters(categories=("Cs",)), min_size=1, max_size=3)
json_text = st.one_of(form_text, st.sampled_from(NASTY_STRINGS), surrogates)
huge_ints = st.sampled_from([0, -1, 101, 2**31, 2**63, -(2**63) - 1, 10**30, -(10**30), 10**4000])
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), huge_ints, st.floats(), json_text, st.decimals(places=2).map(str)
)
FIELD_NAMES = [
    "customer",
    "name",
    "email",
    "phone",
    "shipping_address",
    "items",
    "sku",
    "quantity",
    "card_number",
    "price",
    "total",
    "__proto__",
]
json_keys = st.one_of(st.sampled_from(FIELD_NAMES), json_text)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(json_keys, children, max_size=4)),
    max_leaves=15,
)

valid_orders = st.fixed_dictionaries(
    {
        "customer": st.fixed_dictionaries(
            {
                "name": st.sampled_from(["Ada Lovelace", "Zoë Ñúñez-O'Brien", "李小龙"]),
                "email": st.sampled_from(["ada@example.com", "zoe+shop@example.co.uk"]),
                "phone": st.sampled_from(["+44 20 7946 0958", "+14155550123", "+44 (20) 7946-0958"]),
            }
        ),
        "shipping_address": st.sampled_from(["1 Analytical St, London", "Flat 2\nRue de l'École 3\nParis"]),
        "items": st.lists(
            st.fixed_dictionaries({"sku": st.sampled_from(SKUS[:3]), "quantity": st.integers(1, 25)}),
            min_size=1,
            max_size=4,
        ),
        "card_number": st.sampled_from([GOOD_CARD, "4242424242424242", DECLINED_CARD]),
    }
)
TEXT_FIELDS = ["customer.name", "customer.email", "customer.phone", "shipping_address", "card_number", "items.0.sku"]
ANY_FIELD = [*TEXT_FIELDS, "customer", "items", "items.0", "items.0.quantity"]
bad_quantities = st.one_of(
    st.sampled_from([0, -1, 101, 10**30, -(10**30), 1.5, 2.0, "2", "", None, True, False, [], {}]),
    st.integers(),
    st.floats(),
)
prices = st.one_of(st.sampled_from(["0.00", "0.01", "-5", 0, -1, "1e-9", None]), json_scalars)


def _locate(payload: dict, path: str) -> tuple[dict | list, str | int]:
    *parents, last = path.split(".")
    target = payload
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    return target, int(last) if isinstance(target, list) else last


@st.composite
def tampered_orders(draw: st.DrawFn) -> dict:
    """A valid order with one thing an attacker changed."""
    payload = draw(valid_orders)
    items = payload["items"]
    index = draw(st.integers(0, len(items) - 1))
    kind = draw(st.sampled_from(["price", "sku", "quantity", "duplicate", "long", "any", "drop"]))
    if kind == "price":  # the client's prices and totals must be ignored
        for item in items:
            for key in draw(st.sets(st.sampled_from(["price", "unit_price", "total", "line_total"]))):
                item[key] = draw(prices)
        for key in draw(st.sets(st.sampled_from(["total", "subtotal", "amount", "discount", "currency"]))):
            payload[key] = draw(prices)
    elif kind == "sku":
        items[index]["sku"] = draw(st.one_of(st.sampled_from(["OLD-5", "SOLD-4", "NOPE"]), json_text))
    elif kind == "quantity":
        items[index]["quantity"] = draw(bad_quantities)
    elif kind == "duplicate":
        items.append({"sku": items[index]["sku"], "quantity": draw(st.integers(-5, 120))})
    elif kind == "long":
        target, key = _locate(payload, draw(st.sampled_from(TEXT_FIELDS)))
        unit = draw(st.sampled_from(["x", "é", "😀", "<b>", "\x00", "4"]))
        target[key] = unit * draw(st.sampled_from([17, 33, 201, 255, 1001, 5_000, 100_000]))
    elif kind == "any":
        target, key = _locate(payload, draw(st.sampled_from(ANY_FIELD)))
        target[key] = draw(json_values)
    else:
        target, key = _locate(payload, draw(st.sampled_from(ANY_FIELD)))
        del target[key]
    return payload


def requested(payload: object) -> Counter | None:
    """The quantities an order for this body must reserve, by SKU (None: not an order at all)."""
    try:
        quantities = Counter()
        for item in payload["items"]:
            quantities[item["sku"]] += item["quantity"]
        return quantities
    except (TypeError, KeyError):
        return None


# --------------------------------------------------------------------------- the API's contract


def assert_api_outcome(response: HttpResponse, before: tuple, quantities: Counter | None) -> None:
    """A JSON answer in the documented statuses; all or nothing in the database."""
    event(f"API status {response.status_code}")  # --hypothesis-show-statistics shows the mix
    assert response.status_code in {202, 400, 409, 413, 415}, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    body = response.json()
    stock_before, orders, lines, payments, _ = before
    if response.status_code != 202:
        assert isinstance(body["message"], str) and body["message"], body
        errors = body["errors"]
        assert errors and all(
            isinstance(m, list) and m and all(isinstance(x, str) and x for x in m) for m in errors.values()
        )
        assert snapshot() == before, "a rejected order created rows or moved stock"
        return

    assert quantities, f"an order was accepted for a body that is not an order: {body}"
    assert body["status"] == "pending" and body["number"] and body["status_url"].endswith(f"/api/orders/{body['id']}/")
    order = Order.objects.get(pk=body["id"])
    price = {sku: Decimal(CATALOG[sku][0]) for sku in CATALOG}
    expected_total = sum((price[sku] * quantity for sku, quantity in quantities.items()), Decimal("0.00"))
    assert order.total == expected_total, "the total must come from the catalog's prices only"
    assert order.payment.amount == expected_total
    assert {(line.sku, line.unit_price, line.quantity) for line in order.lines.all()} == {
        (sku, price[sku], quantity) for sku, quantity in quantities.items()
    }
    stock_after, *counts = snapshot()
    assert counts[:3] == [orders + 1, lines + len(quantities), payments + 1]
    assert stock_after == {sku: stock - quantities.get(sku, 0) for sku, stock in stock_before.items()}


def post_json(client: Client, payload: object) -> HttpResponse:
    # Encoded here: the test client would send a bare string or None as it is, not as JSON.
    return post_raw(client, json.dumps(payload).encode(), "application/json")


def post_raw(client: Client, body: bytes, content_type: str) -> HttpResponse:
    # CONTENT_TYPE set explicitly: the test client leaves it out when the body is empty.
    return client.generic("POST", ORDERS_URL, body, content_type=content_type, CONTENT_TYPE=content_type)


@hostile(150)
@given(body=json_values)
def test_any_json_body_gets_a_json_4xx_and_changes_nothing(client: Client, catalog: Catalog, body: object) -> None:
    """Whatever JSON a client sends, it gets an answer it can parse, never a 500."""
    with rolled_back():
        before = snapshot()
        assert_api_outcome(post_json(client, body), before, requested(body))


@hostile(250)
@given(payload=tampered_orders())
def test_a_tampered_order_is_rejected_whole_or_charged_at_catalog_prices(
    client: Client, catalog: Catalog, payload: dict
) -> None:
    """One field changed by an attacker: either a 4xx and nothing happened, or an order at the shop's prices."""
    with rolled_back():
        before = snapshot()
        assert_api_outcome(post_json(client, payload), before, requested(payload))


JSON_TYPES = ["application/json", "application/json; charset=utf-8", "application/json; charset=latin-1"]
OTHER_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "text/json"]


@st.composite
def raw_bodies(draw: st.DrawFn) -> tuple[bytes, Counter | None]:
    """Bytes that are not JSON, JSON cut short, or a valid order in another encoding JSON allows."""
    kind = draw(st.sampled_from(["bytes", "truncated", "encoded", "prefixed"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300)), None
    payload = draw(valid_orders)
    encoded = json.dumps(payload).encode()
    if kind == "truncated":
        return encoded[: draw(st.integers(0, len(encoded) - 1))], None
    if kind == "prefixed":
        return draw(st.sampled_from([b"\xff\xfe", b"\x00", b")]}'", b"\xef\xbb\xbf\xef\xbb\xbf"])) + encoded, None
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32-be"]))
    return json.dumps(payload, ensure_ascii=draw(st.booleans())).encode(encoding), requested(payload)


@hostile(120)
@given(body=raw_bodies(), content_type=st.sampled_from(JSON_TYPES + OTHER_TYPES))
def test_raw_bytes_get_a_json_4xx_and_change_nothing(
    client: Client, catalog: Catalog, body: tuple[bytes, Counter | None], content_type: str
) -> None:
    """Bytes that are not a JSON object, or not declared as JSON, are refused with a JSON error."""
    raw, quantities = body
    with rolled_back():
        before = snapshot()
        response = post_raw(client, raw, content_type)
        if content_type not in JSON_TYPES:
            assert response.status_code == 415, response.content[:300]
        assert_api_outcome(response, before, quantities if content_type in JSON_TYPES else None)


@hostile(30)
@given(
    depth=st.integers(100, 200_000),
    opener=st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'{"items":', b"}")]),
    closed=st.booleans(),
    where=st.sampled_from([None, "customer", "items", "shipping_address"]),
)
def test_deeply_nested_json_is_refused_not_a_crash(
    client: Client, catalog: Catalog, depth: int, opener: tuple[bytes, bytes], closed: bool, where: str | None
) -> None:
    """Nesting deep enough to exhaust a recursive parser is a 400 (or a 413 when too big), never a 500."""
    start, end = opener
    nested = start * depth + b"1" + (end * depth if closed else b"")
    if where is not None:
        nested = b'{"%s": ' % where.encode() + nested + b"}"
    with rolled_back():
        before = snapshot()
        response = post_raw(client, nested, "application/json")
        assert response.status_code in {400, 413}
        assert_api_outcome(response, before, None)


@hostile(15)
@given(
    extra=st.integers(1, 200_000),
    field=st.sampled_from(["shipping_address", "padding", "customer.name"]),
    unit=st.sampled_from(["x", "é", "😀"]),
)
def test_a_body_over_the_size_limit_is_a_413(
    client: Client, catalog: Catalog, extra: int, field: str, unit: str
) -> None:
    """Over the cap, the body is not even parsed: a 413 and nothing reserved."""
    assert django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE == SIZE_LIMIT
    payload = {
        "customer": {"name": "Ada", "email": "ada@example.com", "phone": "+442079460958"},
        "shipping_address": "1 Analytical St",
        "items": [{"sku": "MUG-1", "quantity": 1}],
        "card_number": GOOD_CARD,
    }
    target, key = _locate(payload, field)
    target[key] = ""
    size = len(json.dumps(payload).encode())
    target[key] = unit * (-(-(SIZE_LIMIT - size + extra) // len(unit.encode())))
    body = json.dumps(payload, ensure_ascii=False).encode()
    assert len(body) > SIZE_LIMIT
    with rolled_back():
        before = snapshot()
        response = post_raw(client, body, "application/json")
        assert response.status_code == 413
        assert_api_outcome(response, before, None)


# --------------------------------------------------------------------------- storefront forms

ALERT = re.compile(r'role="alert"[^>]*>(.*?)</', re.S)


def alert_text(response: HttpResponse) -> str:
    """The error messages the page shows the customer."""
    return " ".join(html.unescape(text).strip() for text in ALERT.findall(response.content.decode()))


def assert_readable_error(response: HttpResponse) -> None:
    assert 400 <= response.status_code < 500, response.status_code
    assert response["Content-Type"].startswith("text/html")
    assert re.search(r"\w", alert_text(response)), "a 4xx page must tell the customer what went wrong"


MISSING = object()
form_values = st.one_of(
    form_text,
    st.integers().map(str),
    st.sampled_from(["", " ", "0", "-1", "1.5", "1e3", "9" * 5000, "\x00", "1\x00", "<b>1</b>", "１２", "٣", "0x10"]),
    st.sampled_from(SKUS),
)
# A raw urlencoded body: any bytes percent-encoded (invalid UTF-8, encoded surrogates, %00).
raw_forms = st.lists(
    st.tuples(
        st.sampled_from(["sku", "quantity", "name", "email", "phone", "card_number", "x"]), st.binary(max_size=30)
    ),
    max_size=6,
).map(lambda pairs: "&".join(f"{quote(key)}={quote_from_bytes(value)}" for key, value in pairs).encode())


def post_form(client: Client, url: str, data: dict | bytes) -> HttpResponse:
    if isinstance(data, bytes):
        content_type = "application/x-www-form-urlencoded"
        return client.generic("POST", url, data, content_type=content_type, CONTENT_TYPE=content_type)
    return client.post(url, data)


def assert_cart_within_limits(client: Client) -> None:
    """The cart only ever holds products that exist, within stock and the per-line limit."""
    for sku, quantity in (client.session.get("cart") or {}).items():
        product = Product.objects.get(sku=sku)
        assert isinstance(quantity, int) and 1 <= quantity <= min(product.stock, MAX_LINE_QUANTITY), (sku, quantity)


@st.composite
def cart_forms(draw: st.DrawFn) -> dict | bytes:
    """A cart form: a real SKU or anything, a plausible quantity or anything, fields left out; or raw bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(raw_forms)
    sku = draw(st.sampled_from(["real", "real", "any", "missing"]))
    sku = {"real": st.sampled_from(SKUS), "any": form_values, "missing": st.just(MISSING)}[sku]
    quantity = draw(st.sampled_from(["plausible", "plausible", "any", "missing"]))
    quantity = {"plausible": st.integers(-3, 25).map(str), "any": form_values, "missing": st.just(MISSING)}[quantity]
    sku, quantity = draw(sku), draw(quantity)
    return {key: value for key, value in (("sku", sku), ("quantity", quantity)) if value is not MISSING}


@hostile(250)
@given(url=st.sampled_from(["/cart/add/", "/cart/update/", "/cart/remove/"]), data=cart_forms(), prefill=st.booleans())
def test_cart_forms_answer_4xx_with_a_message_never_5xx(
    catalog: Catalog, url: str, data: dict | bytes, prefill: bool
) -> None:
    """Changing the cart with any input: redirect on success, a readable 4xx otherwise; no order, no stock moved."""
    with rolled_back():
        client = Client()
        if prefill:
            assert client.post("/cart/add/", {"sku": "MUG-1", "quantity": 2}).status_code == 302
        before = snapshot()
        response = post_form(client, url, data)
        event(f"{url} status {response.status_code}")
        if response.status_code == 302:
            assert response["Location"] == "/cart/"
        else:
            assert response.status_code in {400, 404, 409}, response.status_code
            assert_readable_error(response)
        assert snapshot() == before
        assert_cart_within_limits(client)


CHECKOUT_FIELDS = {
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "phone": "+44 20 7946 0958",
    "shipping_address": "1 Test Street\nLondon",
    "card_number": GOOD_CARD,
}


@st.composite
def checkout_forms(draw: st.DrawFn) -> dict | bytes:
    """The checkout form with some fields replaced by hostile values or left out, or raw bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(raw_forms)
    data = dict(CHECKOUT_FIELDS)
    corrupted = draw(st.sets(st.sampled_from(list(CHECKOUT_FIELDS)), min_size=1)) if draw(st.booleans()) else set()
    for field in corrupted:
        value = draw(st.one_of(st.just(MISSING), form_values, st.just(DECLINED_CARD)))
        if value is MISSING:
            del data[field]
        else:
            data[field] = value
    return data


@hostile(150)
@given(
    cart=st.lists(st.tuples(st.sampled_from(SKUS[:4]), st.integers(1, 30)), max_size=3),
    sold_meanwhile=st.booleans(),
    data=checkout_forms(),
)
def test_checkout_places_an_order_only_on_success(
    catalog: Catalog, cart: list[tuple[str, int]], sold_meanwhile: bool, data: dict | bytes
) -> None:
    """Any checkout input: a 302 to the new order page, or a readable 4xx and no order at all."""
    with rolled_back():
        client = Client()
        for sku, quantity in cart:
            client.post("/cart/add/", {"sku": sku, "quantity": quantity})
        if sold_meanwhile and cart:  # someone else bought the last units after this cart was filled
            Product.objects.filter(sku=cart[0][0]).update(stock=0)
        in_cart = Counter(client.session.get("cart") or {})
        stock_before, orders, *_ = before = snapshot()

        response = post_form(client, "/checkout/", data)
        event(f"checkout status {response.status_code}")

        if response.status_code != 302:
            assert response.status_code in {400, 409}, response.status_code
            assert_readable_error(response)
            assert snapshot() == before
            return
        match = re.fullmatch(r"/orders/([0-9a-f-]{36})/", response["Location"])
        assert match, response["Location"]
        order = Order.objects.get(pk=match[1])
        assert Order.objects.count() == orders + 1
        assert in_cart, "an order was placed from an empty cart"
        assert order.total == sum(Decimal(CATALOG[sku][0]) * qty for sku, qty in in_cart.items())
        stock_after = snapshot()[0]
        assert stock_after == {sku: stock - in_cart.get(sku, 0) for sku, stock in stock_before.items()}
        assert not client.session.get("cart"), "the cart is emptied once the order is placed"
        assert client.get(response["Location"]).status_code == 200


# --------------------------------------------------------------------------- catalog queries

query_values = st.one_of(
    form_text,
    st.sampled_from(["\x00", "a\x00b", "%", "_", "\\", "'", "x" * 10_000, "-1", "0", "9" * 5000, "1e9", "1.5"]),
    st.sampled_from(["hostile", "mug", "MUG-1"]),
)


@st.composite
def query_strings(draw: st.DrawFn) -> str:
    """A query string of q/category/page: text, or any bytes percent-encoded."""
    if draw(st.booleans()):
        return "&".join(
            f"{quote(key)}={quote(value, safe='')}"
            for key, value in draw(st.dictionaries(st.sampled_from(["q", "category", "page"]), query_values)).items()
        )
    pairs = draw(st.lists(st.tuples(st.sampled_from(["q", "category", "page"]), st.binary(max_size=40)), max_size=4))
    return "&".join(f"{key}={quote_from_bytes(value)}" for key, value in pairs)


@hostile(150)
@given(path=st.sampled_from(["/", "/api/products/"]), query=query_strings())
def test_catalog_queries_never_fail(client: Client, catalog: Catalog, path: str, query: str) -> None:
    """Any search, category or page parameter: a page (or a 404 for an unknown category), never a 500.
    A NUL anywhere in the query is refused for the whole site by shop.middleware, with a message."""
    response = client.get(f"{path}?{query}")
    if any("\x00" in key or "\x00" in value for key, value in parse_qsl(query, keep_blank_values=True)):
        assert response.status_code == 400
        assert b"NUL character" in response.content
    elif path == "/":
        assert response.status_code in {200, 404}, response.status_code
        assert response["Content-Type"].startswith("text/html")
    else:
        assert response.status_code == 200, response.content[:300]
        body = response.json()
        assert isinstance(body["results"], list) and isinstance(body["count"], int)
        assert all(CATALOG[item["sku"]][2] for item in body["results"]), "an inactive product was listed"


# --------------------------------------------------------------------------- escaping

plain = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=15)
XSS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(1)>',
    "'><iframe src=javascript:alert(1)></iframe>",
    "</title><script>alert(document.cookie)</script>",
    "</textarea><b onmouseover=alert(1)>x</b>",
    '<a href="javascript:alert(1)">click</a>',
    "&lt;not-a-tag&gt;<i>",
    "{{ 7|add:7 }}<u>{% now 'Y' %}</u>",
]
html_tags = st.builds(
    lambda tag, attr, value, text: f'<{tag} {attr}="{value}">{text}</{tag}>',
    st.sampled_from(["script", "img", "svg", "iframe", "a", "style", "textarea", "title"]),
    st.sampled_from(["onerror", "onload", "href", "src", "style"]),
    plain,
    plain,
)
html_strings = st.builds(
    lambda before, payload, after: (before + payload + after).strip(),
    plain,
    st.one_of(st.sampled_from(XSS), html_tags),
    plain,
).filter(lambda text: 0 < len(text) <= 200)


def assert_escaped(response: HttpResponse, *texts: str, where: str) -> None:
    assert response.status_code == 200, (where, response.status_code)
    content = response.content.decode()
    for text in texts:
        assert escape(text) in content, f"{where}: {text!r} is not shown"
        if escape(text) != text:
            assert text not in content, f"{where}: {text!r} is in the page unescaped"


@hostile(25)
@given(name=html_strings, description=html_strings, customer=html_strings, address=html_strings)
def test_html_in_names_is_escaped_on_every_storefront_page(
    catalog: Catalog, name: str, description: str, customer: str, address: str
) -> None:
    """A product (or customer) named like an XSS payload is shown as text on every page, never as markup."""
    with rolled_back():
        category = Category.objects.create(name=name[:100], slug="xss")
        product = Product.objects.create(
            category=category, name=name, slug="xss-product", sku="XSS-1", price=Decimal("9.99"), stock=5
        )
        Product.objects.filter(pk=product.pk).update(description=description)
        client = Client()

        assert_escaped(client.get("/"), name, where="product list")
        search = name[:100].strip()
        assert_escaped(client.get("/", {"q": search}), search, where="search results")
        assert_escaped(client.get(product.get_absolute_url()), name, description, where="product page")
        added = client.post("/cart/add/", {"sku": "XSS-1", "quantity": 1}, follow=True)
        assert_escaped(added, name, where="cart")
        assert_escaped(client.get("/checkout/"), name, where="checkout")
        form = CHECKOUT_FIELDS | {"name": customer, "shipping_address": address}
        placed = client.post("/checkout/", form)
        assert placed.status_code == 302, alert_text(placed)
        assert_escaped(client.get(placed["Location"]), name, customer, address, where="order page")


@hostile(25)
@given(payload=html_strings, nested=html_strings)
def test_html_in_task_arguments_is_escaped_on_the_task_console(admin_client: Client, payload: str, nested: str) -> None:
    """Task arguments, errors and tracebacks come from anywhere; staff see them as text, never as markup."""
    with rolled_back():
        record = TaskRecord.objects.create(
            task_id=str(uuid.uuid4()),
            task_name="orders.tasks.charge_payment",
            state=states.FAILURE,
            args=[payload, {"note": nested}],
            kwargs={"reason": nested},
            sent_at=timezone.now(),
            exception_type="RuntimeError",
            exception_message=payload,
        )
        TaskResult.objects.create(
            task_id=record.task_id,
            status=states.FAILURE,
            result=json.dumps({"exc_type": "RuntimeError", "exc_message": [nested]}),
            traceback=f"Traceback (most recent call last):\nRuntimeError: {payload}",
        )
        response = admin_client.get(reverse("admin:tasks_admin_taskrecord_change", args=[record.pk]))

        assert_escaped(
            response,
            json.dumps(record.args, indent=2, ensure_ascii=False),
            json.dumps(record.kwargs, indent=2, ensure_ascii=False),
            payload,
            where="task console",
        )


@hostile(25)
@given(name=html_strings, worker=html_strings, message=html_strings)
def test_html_in_task_rows_is_escaped_on_the_task_lists(admin_client: Client, name: str, worker: str, message: str):
    """The task and dead-letter lists write some cells as HTML (format_html, tasks_admin/admin.py): a
    task name, worker or error that looks like markup is still shown as text."""
    with rolled_back():
        TaskRecord.objects.create(
            task_id=str(uuid.uuid4()),
            task_name=f"x.{name}",
            state=states.FAILURE,
            sent_at=timezone.now(),
            finished_at=timezone.now(),
            worker=worker[:255],
            exception_type="RuntimeError",
            exception_message=message[:140],
        )
        tasks = admin_client.get(reverse("admin:tasks_admin_taskrecord_changelist"))
        dead_letters = admin_client.get(reverse("admin:tasks_admin_deadletter_changelist"))

        assert_escaped(tasks, f"x.{name}", name.rpartition(".")[2], worker[:255], where="task list")
        assert_escaped(dead_letters, name.rpartition(".")[2], message[:140], where="dead-letter list")
