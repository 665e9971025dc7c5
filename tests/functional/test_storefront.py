"""The HTML storefront over HTTP: catalog, cart, checkout and the order page.

Each test runs in a TestCase transaction: on_commit callbacks never run, so no broker
is involved; the workflow dispatch is only captured and counted, never executed.
"""

import html
import re
import uuid
from decimal import Decimal

import pytest
from django.test import Client

from orders import services
from orders.models import Order, OrderLine, Payment, WorkflowStep
from shop.models import Product
from tests.factories import DECLINED_CARD, GOOD_CARD, make_category, make_product
from tests.support import WORKFLOW_STEPS

pytestmark = pytest.mark.django_db

CART_URL = "/cart/"
CHECKOUT_URL = "/checkout/"


def text(response) -> str:
    """The page as a user reads it: HTML entities decoded."""
    return html.unescape(response.content.decode())


def add(client: Client, product_or_sku, quantity=1):
    sku = getattr(product_or_sku, "sku", product_or_sku)
    return client.post("/cart/add/", {"sku": sku, "quantity": quantity})


def update(client: Client, product_or_sku, quantity):
    sku = getattr(product_or_sku, "sku", product_or_sku)
    return client.post("/cart/update/", {"sku": sku, "quantity": quantity})


def cart_quantities(client: Client) -> dict[str, int]:
    """The cart as the cart page shows it: {sku: quantity}, read from the quantity inputs."""
    page = client.get(CART_URL).content.decode()
    pattern = r'name="sku" value="([^"]+)">\s*<input type="number" name="quantity" value="(\d+)"'
    return {sku: int(quantity) for sku, quantity in re.findall(pattern, page)}


def cart_count(response) -> int:
    match = re.search(r'data-testid="cart-count">(\d+)<', response.content.decode())
    assert match, "the header shows the cart count"
    return int(match.group(1))


def stock_of(product: Product) -> int:
    return Product.objects.values_list("stock", flat=True).get(pk=product.pk)


def checkout_form(**overrides) -> dict:
    form = {
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "phone": "+44 20 7946 0958",
        "shipping_address": "1 Test Street\nLondon",
        "card_number": GOOD_CARD,
    }
    return form | overrides


def assert_no_order() -> None:
    assert Order.objects.count() == 0
    assert OrderLine.objects.count() == 0
    assert Payment.objects.count() == 0
    assert WorkflowStep.objects.count() == 0


def card_titles(response) -> list[str]:
    return [
        html.unescape(t) for t in re.findall(r'class="card-title" href="[^"]*">([^<]*)</a>', response.content.decode())
    ]


# --------------------------------------------------------------------------- catalog


def test_catalog_lists_active_products_with_prices_and_stock(client):
    category = make_category("Kitchen")
    make_product(name="Blue Mug", price="7.5", stock=4, category=category)
    make_product(name="Empty Jar", price="3.00", stock=0, category=category)
    hidden = make_product(name="Hidden Lamp", category=category)
    Product.objects.filter(pk=hidden.pk).update(active=False)

    response = client.get("/")

    assert response.status_code == 200
    page = text(response)
    assert card_titles(response) == ["Blue Mug", "Empty Jar"]
    assert "€7.50" in page and "4 in stock" in page
    assert "€3.00" in page and "Out of stock" in page
    assert "Hidden Lamp" not in page
    assert "2 products" in page


def test_catalog_filters_by_category(client):
    kitchen, garden = make_category("Kitchen"), make_category("Garden")
    make_product(name="Frying Pan", category=kitchen)
    make_product(name="Rake", category=garden)

    response = client.get("/", {"category": garden.slug})

    assert response.status_code == 200
    assert card_titles(response) == ["Rake"]
    assert "<h1>Garden</h1>" in response.content.decode()


def test_catalog_search_matches_names_and_exact_skus(client):
    category = make_category()
    mug = make_product(name="Blue Mug", category=category)
    plate = make_product(name="Dinner Plate", category=category)
    make_product(name="Teapot", category=category)

    assert card_titles(client.get("/", {"q": "mug"})) == ["Blue Mug"]
    assert card_titles(client.get("/", {"q": "BLUE"})) == ["Blue Mug"]
    assert card_titles(client.get("/", {"q": plate.sku})) == ["Dinner Plate"]
    assert card_titles(client.get("/", {"q": plate.sku.lower()})) == ["Dinner Plate"]
    assert mug.sku not in text(client.get("/", {"q": plate.sku}))
    empty = client.get("/", {"q": "no such thing"})
    assert empty.status_code == 200
    assert card_titles(empty) == []
    assert "No products match" in text(empty)


def test_catalog_search_and_category_combine(client):
    kitchen, garden = make_category(), make_category()
    make_product(name="Green Mug", category=kitchen)
    make_product(name="Green Hose", category=garden)

    assert card_titles(client.get("/", {"q": "green", "category": garden.slug})) == ["Green Hose"]


def test_catalog_escapes_the_search_query(client):
    response = client.get("/", {"q": "<script>alert(1)</script>"})

    assert response.status_code == 200
    assert "<script>alert(1)</script>" not in response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.content.decode()


def test_catalog_paginates_12_per_page_and_the_next_link_leads_to_page_2(client):
    category = make_category()
    for n in range(1, 16):
        make_product(name=f"Item {n:02d}", category=category)

    first = client.get("/", {"category": category.slug})
    assert card_titles(first) == [f"Item {n:02d}" for n in range(1, 13)]
    assert "Page 1 of 2" in text(first)
    next_href = html.unescape(re.search(r'<a href="([^"]+)">Next →</a>', first.content.decode()).group(1))

    second = client.get("/" + next_href)
    assert second.status_code == 200
    assert card_titles(second) == ["Item 13", "Item 14", "Item 15"]
    assert "Page 2 of 2" in text(second)
    assert "Next →" not in text(second)
    assert "← Previous" in text(second)


@pytest.mark.parametrize(("page", "expected_page"), [("abc", 1), ("", 1), ("0", 2), ("-1", 2), ("999", 2), ("1.5", 1)])
def test_catalog_with_a_bad_page_number_falls_back_to_a_real_page(client, page, expected_page):
    category = make_category()
    for n in range(1, 16):
        make_product(name=f"Item {n:02d}", category=category)

    response = client.get("/", {"page": page})

    assert response.status_code == 200
    assert f"Page {expected_page} of 2" in text(response)
    assert len(card_titles(response)) == (12 if expected_page == 1 else 3)


def test_product_page_shows_the_product(client):
    product = make_product(name="Blue Mug", price="7.50", stock=4)

    response = client.get(f"/products/{product.slug}/")

    assert response.status_code == 200
    page = text(response)
    assert "<h1>Blue Mug</h1>" in page
    assert f"SKU {product.sku}" in page
    assert "€7.50" in page
    assert "4 in stock" in page
    assert "Add to cart" in page


def test_product_page_of_an_out_of_stock_product_offers_no_add_button(client):
    product = make_product(stock=0)

    page = text(client.get(f"/products/{product.slug}/"))

    assert "Out of stock" in page
    assert "Add to cart" not in page


def test_unknown_or_inactive_product_pages_are_404(client):
    inactive = make_product()
    Product.objects.filter(pk=inactive.pk).update(active=False)

    for url in ("/products/no-such-product/", f"/products/{inactive.slug}/"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response["Content-Type"].startswith("text/html")
        assert "Not found" in text(response)


# --------------------------------------------------------------------------- cart


def test_adding_to_the_cart_keeps_it_in_the_session(client):
    product = make_product(name="Blue Mug", price="7.50", stock=10)

    response = add(client, product, 2)

    assert response.status_code == 302
    assert response["Location"] == CART_URL
    cart = client.get(CART_URL)
    page = text(cart)
    assert "Blue Mug × 2 added to your cart." in page
    assert "€15.00" in page
    assert cart_count(cart) == 2
    assert cart_quantities(client) == {product.sku: 2}
    # Another visitor, another session: their cart is empty.
    other = Client()
    assert "Your cart is empty" in text(other.get(CART_URL))
    assert cart_count(other.get(CART_URL)) == 0
    assert stock_of(product) == 10  # a cart reserves nothing


def test_adding_again_adds_up(client):
    product = make_product(stock=10)

    add(client, product, 2)
    add(client, product, 3)

    assert cart_quantities(client) == {product.sku: 5}


def test_updating_a_line_sets_its_quantity(client):
    product = make_product(name="Blue Mug", price="7.50", stock=10)
    add(client, product, 2)

    response = update(client, product, 4)

    assert response.status_code == 302
    cart = client.get(CART_URL)
    assert "Blue Mug × 4 now in your cart." in text(cart)
    assert "€30.00" in text(cart)
    assert cart_quantities(client) == {product.sku: 4}


def test_removing_a_line_empties_the_cart(client):
    product = make_product(name="Blue Mug", stock=10)
    keep = make_product(name="Teapot", stock=10)
    add(client, product, 2)
    add(client, keep, 1)

    response = client.post("/cart/remove/", {"sku": product.sku})

    assert response.status_code == 302
    cart = client.get(CART_URL)
    assert "Removed from your cart." in text(cart)
    assert cart_quantities(client) == {keep.sku: 1}
    client.post("/cart/remove/", {"sku": keep.sku})
    assert "Your cart is empty" in text(client.get(CART_URL))


@pytest.mark.parametrize(
    ("quantity", "message"),
    [
        ("0", "Quantity: Ensure this value is greater than or equal to 1."),
        ("-1", "Quantity: Ensure this value is greater than or equal to 1."),
        ("abc", "Quantity: Enter a whole number."),
        ("1.5", "Quantity: Enter a whole number."),
        ("", "Quantity: This field is required."),
        ("101", "Quantity: Ensure this value is less than or equal to 100."),
        ("1" + "0" * 40, "Quantity: Ensure this value is less than or equal to 100."),
    ],
)
@pytest.mark.parametrize("action", [add, update], ids=["add", "update"])
def test_a_bad_quantity_is_a_400_with_the_reason_on_the_page(client, action, quantity, message):
    product = make_product(stock=500)
    add(client, product, 2)

    response = action(client, product, quantity)

    assert response.status_code == 400
    assert message in text(response)
    assert 'role="alert"' in response.content.decode()
    assert cart_quantities(client) == {product.sku: 2}


def test_adding_more_than_in_stock_is_a_409_on_the_product_page(client):
    product = make_product(name="Rare Vase", stock=3)

    response = add(client, product, 4)

    assert response.status_code == 409
    assert "You can have at most 3 of Rare Vase in your cart." in text(response)
    assert "<h1>Rare Vase</h1>" in text(response)
    assert cart_quantities(client) == {}


def test_adding_up_past_the_stock_is_a_409_and_keeps_the_cart(client):
    product = make_product(name="Rare Vase", stock=3)
    add(client, product, 2)

    response = add(client, product, 2)

    assert response.status_code == 409
    assert "at most 3" in text(response)
    assert cart_quantities(client) == {product.sku: 2}


def test_updating_past_the_stock_is_a_409_on_the_cart_page(client):
    product = make_product(name="Rare Vase", stock=3)
    add(client, product, 1)

    response = update(client, product, 5)

    assert response.status_code == 409
    assert "You can have at most 3 of Rare Vase in your cart." in text(response)
    assert "<h1>Your cart</h1>" in text(response)
    assert cart_quantities(client) == {product.sku: 1}


def test_adding_an_out_of_stock_product_is_a_409(client):
    product = make_product(name="Rare Vase", stock=0)

    response = add(client, product, 1)

    assert response.status_code == 409
    assert "Rare Vase is out of stock." in text(response)
    assert cart_quantities(client) == {}


def test_adding_an_inactive_product_is_refused(client):
    product = make_product(name="Old Lamp", stock=5)
    Product.objects.filter(pk=product.pk).update(active=False)

    response = add(client, product, 1)

    assert response.status_code == 409
    assert "Old Lamp is no longer available." in text(response)
    assert cart_quantities(client) == {}


@pytest.mark.parametrize("action", [add, update], ids=["add", "update"])
def test_an_unknown_sku_is_a_404_with_the_reason_on_the_page(client, action):
    response = action(client, "NO-SUCH-SKU", 1)

    assert response.status_code == 404
    assert "There is no product 'NO-SUCH-SKU'." in text(response)
    assert cart_quantities(client) == {}


def test_cart_changes_are_post_only(client):
    product = make_product(stock=5)

    for url in ("/cart/add/", "/cart/update/", "/cart/remove/"):
        assert client.get(url, {"sku": product.sku, "quantity": 1}).status_code == 405, url
    assert cart_quantities(client) == {}


def test_cart_forms_need_a_csrf_token():
    product = make_product(stock=5)
    browser = Client(enforce_csrf_checks=True)

    refused = browser.post("/cart/add/", {"sku": product.sku, "quantity": 1})

    assert refused.status_code == 403
    assert "CSRF" in text(refused)
    assert cart_quantities(browser) == {}

    # With the token the product page hands out, the same request works.
    page = browser.get(f"/products/{product.slug}/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    accepted = browser.post("/cart/add/", {"sku": product.sku, "quantity": 1, "csrfmiddlewaretoken": token})
    assert accepted.status_code == 302
    assert cart_quantities(browser) == {product.sku: 1}


def test_the_cart_drops_products_deleted_from_the_catalog(client):
    product = make_product(name="Soon Gone", stock=5)
    add(client, product, 1)
    product.delete()

    response = client.get(CART_URL)

    assert response.status_code == 200
    assert "Your cart is empty" in text(response)


# --------------------------------------------------------------------------- checkout


def test_checkout_with_an_empty_cart_says_so(client):
    response = client.get(CHECKOUT_URL)

    assert response.status_code == 200
    assert "Your cart is empty" in text(response)


def test_posting_checkout_with_an_empty_cart_is_a_400(client):
    response = client.post(CHECKOUT_URL, checkout_form())

    assert response.status_code == 400
    assert "Your cart is empty" in text(response)
    assert_no_order()


def test_checkout_shows_the_form_and_the_total(client):
    product = make_product(name="Blue Mug", price="12.50", stock=5)
    add(client, product, 2)

    response = client.get(CHECKOUT_URL)

    assert response.status_code == 200
    page = text(response)
    assert "2 × Blue Mug" in page
    assert "Total €25.00" in page
    for field in ("name", "email", "phone", "shipping_address", "card_number"):
        assert f'name="{field}"' in page


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("phone", "12345", "Enter the phone number in international format"),
        ("phone", "020 7946 0958", "Enter the phone number in international format"),
        ("email", "not-an-email", "Enter a valid email address."),
        ("card_number", "4242 4242 4242 4241", "This card number is not valid (checksum failed)."),
        ("card_number", "abcd", "Enter a card number of 12 to 19 digits."),
        ("name", "", "This field is required."),
        ("shipping_address", "   ", "This field is required."),
    ],
)
def test_invalid_checkout_fields_are_a_400_with_the_error_and_no_order(
    client, django_capture_on_commit_callbacks, field, value, message
):
    product = make_product(stock=5)
    add(client, product, 2)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(CHECKOUT_URL, checkout_form(**{field: value}))

    assert response.status_code == 400
    errors = re.findall(r'<small class="field-error"[^>]*>([^<]*)</small>', response.content.decode())
    assert any(message in html.unescape(error) for error in errors), errors
    assert_no_order()
    assert callbacks == []
    assert stock_of(product) == 5
    assert cart_quantities(client) == {product.sku: 2}


def test_successful_checkout_places_the_order_and_empties_the_cart(client, django_capture_on_commit_callbacks):
    mug = make_product(name="Blue Mug", price="12.50", stock=5)
    plate = make_product(name="Plate", price="3.99", stock=4)
    add(client, mug, 2)
    add(client, plate, 1)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(CHECKOUT_URL, checkout_form())

    order = Order.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/orders/{order.pk}/"
    assert len(callbacks) == 1  # one workflow dispatch, sent after commit
    assert order.status == Order.Status.PENDING
    assert order.total == Decimal("28.99")
    assert (order.customer_name, order.email, order.phone) == ("Ada Lovelace", "ada@example.com", "+442079460958")
    assert {line.sku: line.quantity for line in order.lines.all()} == {mug.sku: 2, plate.sku: 1}
    assert (stock_of(mug), stock_of(plate)) == (3, 3)
    assert Payment.objects.get(order=order).card_last4 == "4242"
    assert order.steps.count() == len(WORKFLOW_STEPS)

    cart = client.get(CART_URL)
    assert "Your cart is empty" in text(cart)
    assert cart_count(cart) == 0

    order_page = client.get(response["Location"])
    assert order_page.status_code == 200
    assert order.number in text(order_page)


def test_checkout_charges_current_prices_not_the_ones_seen_when_adding(client):
    product = make_product(price="10.00", stock=5)
    add(client, product, 2)
    Product.objects.filter(pk=product.pk).update(price=Decimal("11.00"))

    response = client.post(CHECKOUT_URL, checkout_form())

    assert response.status_code == 302
    assert Order.objects.get().total == Decimal("22.00")


def test_declined_card_is_still_accepted_at_checkout(client):
    """The demo decline card is refused by the payment step later, not by the form."""
    product = make_product(stock=5)
    add(client, product, 1)

    response = client.post(CHECKOUT_URL, checkout_form(card_number=DECLINED_CARD))

    assert response.status_code == 302
    assert Order.objects.get().status == Order.Status.PENDING


def test_stock_lowered_after_adding_to_the_cart_is_a_409_at_checkout(client, django_capture_on_commit_callbacks):
    product = make_product(name="Rare Vase", stock=5)
    add(client, product, 3)
    Product.objects.filter(pk=product.pk).update(stock=1)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(CHECKOUT_URL, checkout_form())

    assert response.status_code == 409
    assert f"Only 1 of Rare Vase ({product.sku}) left; you asked for 3." in text(response)
    assert "Only 1 left." in text(response)  # the summary flags the line
    assert_no_order()
    assert callbacks == []
    assert stock_of(product) == 1
    assert cart_quantities(client) == {product.sku: 3}


def test_insufficient_stock_on_one_line_reserves_nothing_at_checkout(client):
    plenty = make_product(stock=10)
    scarce = make_product(stock=5)
    add(client, plenty, 2)
    add(client, scarce, 3)
    Product.objects.filter(pk=scarce.pk).update(stock=0)

    response = client.post(CHECKOUT_URL, checkout_form())

    assert response.status_code == 409
    assert_no_order()
    assert (stock_of(plenty), stock_of(scarce)) == (10, 0)


def test_a_product_withdrawn_after_adding_to_the_cart_stops_checkout(client):
    product = make_product(name="Old Lamp", stock=5)
    add(client, product, 1)
    Product.objects.filter(pk=product.pk).update(active=False)

    response = client.post(CHECKOUT_URL, checkout_form())

    assert response.status_code == 400
    assert f"Unknown or unavailable product: {product.sku}." in text(response)
    assert_no_order()
    assert stock_of(product) == 5


# --------------------------------------------------------------------------- order page


def place_order_via_checkout(client: Client, *lines: tuple[Product, int], **form) -> Order:
    for product, quantity in lines:
        assert add(client, product, quantity).status_code == 302
    response = client.post(CHECKOUT_URL, checkout_form(**form))
    assert response.status_code == 302, text(response)
    return Order.objects.get()


def test_order_page_shows_number_status_steps_and_items(client):
    product = make_product(name="Blue Mug", price="12.50", stock=5)
    order = place_order_via_checkout(client, (product, 2))

    response = client.get(f"/orders/{order.pk}/")

    assert response.status_code == 200
    page = response.content.decode()
    assert f"Order {order.number}" in text(response)
    assert re.search(r'data-testid="order-status">Pending</span>', page)
    steps = re.findall(
        r'<li class="step state-pending" data-step="([a-z_]+)">\s*<span class="step-name">\1</span>\s*'
        r'<span class="step-state">PENDING</span>',
        page,
    )
    assert steps == WORKFLOW_STEPS
    row = re.search(r"<tr><td>Blue Mug <span[^>]*>([^<]+)</span></td><td>€([^<]+)</td><td>(\d+)</td>", page)
    assert row and row.groups() == (product.sku, "12.50", "2")
    assert "€25.00" in text(response)
    assert "1 Test Street<br>London" in page
    # Nothing is said to the customer until the outcome is known.
    assert re.search(r'data-testid="notifications">\s*<li class="muted">None yet.</li>\s*</ul>', page)


def test_order_page_of_a_confirmed_order_lists_its_messages(client, settings):
    settings.PAYMENT_DEMO_LATENCY = 0
    order = place_order_via_checkout(client, (make_product(stock=5), 1))
    for step in (services.charge_payment, services.create_shipment, services.record_sales, services.confirm_order):
        step(str(order.pk))

    response = client.get(f"/orders/{order.pk}/")

    assert re.search(r'data-testid="order-status">Confirmed</span>', response.content.decode())
    assert re.search(r"email to \S+: pending.*sms to \S+: pending", text(response))  # queued, not sent yet
    assert text(response).count("SUCCESS") == len(WORKFLOW_STEPS)


def test_order_page_of_an_order_on_hold_tells_the_customer_it_is_delayed_not_why(client, settings):
    settings.PAYMENT_DEMO_LATENCY = 0
    order = place_order_via_checkout(client, (make_product(stock=5), 1))
    services.charge_payment(str(order.pk))
    services.settle_step(order.pk, "create_shipment", "FAILURE", error="RuntimeError: warehouse DB password wrong")
    services.stop_after_failure(str(order.pk))

    response = client.get(f"/orders/{order.pk}/")

    assert re.search(r'data-testid="order-status">on hold</span>', response.content.decode())
    assert "A problem on our side delays your order" in text(response)
    assert "warehouse DB password" not in text(response) and "RuntimeError" not in text(response)


def test_order_page_escapes_html_from_products_and_customers(client):
    product = make_product(name="<script>alert(1)</script>", stock=5)
    order = place_order_via_checkout(
        client, (product, 1), name="<img src=x onerror=alert(2)>", shipping_address="<b>bold</b> street"
    )

    page = client.get(f"/orders/{order.pk}/").content.decode()

    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x onerror=alert(2)>" not in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "<b>bold</b>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt; street" in page


def test_catalog_product_and_cart_pages_escape_product_names(client):
    product = make_product(name="<script>alert(1)</script>", stock=5)
    add(client, product, 1)

    for url in ("/", f"/products/{product.slug}/", CART_URL, CHECKOUT_URL):
        page = client.get(url).content.decode()
        assert "<script>alert(1)</script>" not in page, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, url


@pytest.mark.parametrize("path", [f"/orders/{uuid.uuid4()}/", "/orders/not-a-uuid/", "/orders/123/"])
def test_unknown_order_page_is_404(client, path):
    response = client.get(path)

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    assert "Not found" in text(response)
