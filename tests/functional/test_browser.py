"""A customer buys in a real browser (headless Debian Chromium) and watches the order confirm live."""

import os
import re
import shutil
from pathlib import Path

import pytest
from django.db import connections

from orders.models import Order
from shop.models import Product
from tests.factories import make_category, make_product
from tests.fakes.sms_gateway import Reply
from tests.support import require

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Flags for a sandboxed, offline machine: no background calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page(monkeypatch):
    require(os.access(CHROMIUM, os.X_OK) or bool(shutil.which("chromium")), "Debian's chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API keeps an event loop on this thread; the ORM calls the test
    # makes between browser steps are ordinary synchronous calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        yield page
        browser.close()
        # ORM calls made in here ran in Playwright's context, with their own connections.
        connections.close_all()


def test_browse_add_to_cart_check_out_and_watch_the_order_confirm(browser_page, live_server, worker, sms_gateway):
    from playwright.sync_api import expect

    page = browser_page
    teas = make_category("Tea")
    product = make_product(name="Jasmine Pearls", price="8.40", stock=6, category=teas)
    make_product(name="Assam Breakfast", price="5.10", stock=3, category=teas)
    # A slow SMS gateway holds the confirmation SMS (sent once the order is confirmed) back, so
    # the order page must update itself to show it sent.
    sms_gateway.script(Reply(status=200, delay=2.0))

    page.goto(live_server.url)
    expect(page.get_by_role("heading", name="All products")).to_be_visible()
    page.get_by_role("link", name="Tea").click()
    page.screenshot(path=ARTIFACTS / "catalog.png", full_page=True)
    page.get_by_role("link", name="Jasmine Pearls").click()
    expect(page.get_by_text("€8.40")).to_be_visible()
    page.get_by_label("Quantity").fill("2")
    page.get_by_role("button", name="Add to cart").click()

    expect(page.get_by_text("Jasmine Pearls × 2 added to your cart.")).to_be_visible()
    expect(page.get_by_test_id("cart-count")).to_have_text("2")
    page.screenshot(path=ARTIFACTS / "cart.png", full_page=True)
    page.get_by_role("link", name="Check out").click()

    page.get_by_label("Full name").fill("Grace Hopper")
    page.get_by_label("Email").fill("grace@example.com")
    page.get_by_label("Phone").fill("+1 415 555 0100")
    page.get_by_label("Shipping address").fill("1 Harbor Way\nArlington, VA")
    page.get_by_label("Card number").fill("4242 4242 4242 4242")
    page.screenshot(path=ARTIFACTS / "checkout.png", full_page=True)
    page.get_by_role("button", name=re.compile("Place order")).click()

    expect(page).to_have_url(re.compile(r"/orders/[0-9a-f-]{36}/$"))
    status = page.get_by_test_id("order-status")
    messages = page.get_by_test_id("notifications")
    assert "sms to +14155550100: sent" not in messages.inner_text(), "the SMS should still be on its way"
    page.evaluate("window.loadedOnce = true")  # gone if the page reloads
    expect(status).to_have_text("Confirmed", timeout=30_000)
    expect(page.locator('[data-step="confirm_order"] .step-state')).to_have_text("SUCCESS")
    expect(messages).to_contain_text("sms to +14155550100: sent", timeout=30_000)
    expect(messages).to_contain_text("email to grace@example.com: sent")
    assert page.evaluate("window.loadedOnce") is True
    page.screenshot(path=ARTIFACTS / "order-confirmed.png", full_page=True)

    order = Order.objects.get(email="grace@example.com")
    assert order.status == Order.Status.CONFIRMED and str(order.total) == "16.80"
    assert Product.objects.get(pk=product.pk).stock == 4


def test_the_live_order_page_names_an_order_on_hold_as_the_server_does(
    browser_page, live_server, monkeypatch, settings
):
    from playwright.sync_api import expect

    from orders import services, workflow
    from orders.checkout import Customer, place_order
    from orders.models import WorkflowStep
    from tests.factories import GOOD_CARD

    monkeypatch.setattr(workflow, "publish", lambda order, canvas: True)  # no worker: the test runs the steps
    settings.PAYMENT_DEMO_LATENCY = 0
    order = place_order(
        customer=Customer(name="Held", email="held@example.com", phone="+442079460997"),
        shipping_address="1 Waiting Road",
        items=[(make_product(stock=3).sku, 1)],
        card_number=GOOD_CARD,
    )
    services.charge_payment(str(order.pk))
    services.settle_step(order.pk, "create_shipment", WorkflowStep.State.FAILURE, error="RuntimeError: warehouse")
    services.stop_after_failure(str(order.pk))
    polls = []
    browser_page.on("request", lambda request: polls.append(request.url) if "/api/orders/" in request.url else None)

    browser_page.goto(live_server.url + order.get_absolute_url())
    status = browser_page.get_by_test_id("order-status")
    expect(status).to_have_text("on hold")  # as the server renders it
    browser_page.wait_for_timeout(3000)  # the page polls its status meanwhile

    assert polls, "the page never polled its status"
    assert status.inner_text() == "on hold"
    assert len(polls) <= 2, f"an order waiting for staff was polled {len(polls)} times in 3 s"
