"""A customer without an account finds their order in a real browser (headless Chromium), cancels
it, and watches the order page follow the cancellation workflow on a real worker to the end."""

import pytest

from orders.models import Order
from tests.factories import make_product, order_payload
from tests.functional.test_browser import browser_page  # noqa: F401 — the fixture
from tests.integration.test_order_safety import consuming_paused, place
from tests.support import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("width", [1280, 375])
def test_find_the_order_cancel_it_and_watch_it_cancelled(browser_page, live_server, worker, client, width):  # noqa: F811
    from playwright.sync_api import expect  # noqa: PLC0415 — imported once the fixture found Playwright

    page = browser_page
    page.set_viewport_size({"width": width, "height": 900})
    payload = order_payload((make_product(stock=4), 1))
    with consuming_paused("orders"):
        order = place(client, payload)

        page.goto(f"{live_server.url}/orders/find/?number={order.number}")
        page.get_by_label("E-mail address used at checkout").fill("nobody@example.com")
        page.get_by_role("button", name="Find my order").click()
        expect(page.get_by_role("alert")).to_contain_text("We found no order with this number and e-mail address")

        page.get_by_label("E-mail address used at checkout").fill(payload["customer"]["email"].upper())
        page.get_by_role("button", name="Find my order").click()
        expect(page.get_by_test_id("order-status")).to_have_text("Pending")

        page.get_by_role("link", name="Cancel this order").click()
        page.get_by_label("Why are you cancelling? (optional)").fill("Ordered twice")
        page.get_by_role("button", name="Yes, cancel my order").click()
        expect(page.get_by_test_id("order-status")).to_have_text("Cancelling")

    expect(page.get_by_test_id("order-status")).to_have_text("Cancelled", timeout=30_000)  # live, no reload
    wait_for(lambda: Order.objects.get(pk=order.pk).payment.status == "voided", message="voided")
    expect(page.get_by_role("link", name="Cancel this order")).to_have_count(0)
