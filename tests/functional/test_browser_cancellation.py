"""A customer without an account finds their order in a real browser (headless Chromium), cancels
it, and watches the order page follow the cancellation workflow on a real worker to the end: the
order cancelled and, when it was paid, the payment refunded — live, and said to screen readers."""

import pytest

from orders.models import Order
from tests.factories import make_product, order_payload
from tests.fakes import switches
from tests.functional.accessibility import violations
from tests.functional.test_browser import ARTIFACTS, browser_page  # noqa: F401 — the fixture
from tests.integration.test_order_safety import consuming_paused, place, status
from tests.support import wait_for

# Every text the page's polite live region is given, kept in the page (the next one replaces it).
RECORD_ANNOUNCEMENTS = """() => {
  window.said = [];
  const region = document.querySelector("[data-testid=order-announcer]");
  new MutationObserver(() => window.said.push(region.textContent)).observe(
    region, {childList: true, characterData: true, subtree: true});
}"""

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


@pytest.mark.parametrize("width", [1280, 375])
def test_a_paid_order_cancelled_shows_its_payment_refunded_live_and_says_so(
    browser_page,  # noqa: F811
    live_server,
    worker,
    client,
    fake_tasks_dir,
    width,
):
    from playwright.sync_api import expect  # noqa: PLC0415 — imported once the fixture found Playwright

    page = browser_page
    page.set_viewport_size({"width": width, "height": 900})
    # Paid, its shipment held back (a slow warehouse); the refund slow enough to be seen coming.
    with (
        switches.slow(fake_tasks_dir, switches.SHIPMENT, 10) as shipping,
        switches.slow(fake_tasks_dir, switches.REFUND, 4),
    ):
        wait_for(lambda: not shipping.exists(), timeout=15, message="an earlier test's shipment ended")
        order = place(client, order_payload((make_product(stock=4), 1)))
        wait_for(lambda: shipping.exists() and status(order) == Order.Status.PAID, message="paid, shipping")

        page.goto(f"{live_server.url}{order.get_absolute_url()}")
        expect(page.get_by_test_id("payment-status")).to_have_text("taken")
        page.get_by_role("link", name="Cancel this order").click()
        expect(page.locator("p", has_text="you paid is refunded to your card")).to_be_visible()
        page.get_by_role("button", name="Yes, cancel my order").click()
        expect(page.get_by_test_id("order-status")).to_have_text("Cancelling")
        page.evaluate(RECORD_ANNOUNCEMENTS)
        expect(page.get_by_test_id("payment-status")).to_have_text("taken")  # the refund is on its way

        # Live, no reload: refunded (the cancellation's first step), then cancelled.
        expect(page.get_by_test_id("payment-status")).to_have_text("refunded", timeout=30_000)
        expect(page.get_by_test_id("order-status")).to_have_text("Cancelled", timeout=30_000)
    sent = page.get_by_test_id("notifications").locator("li", has_text=": sent")
    expect(sent).to_have_count(2, timeout=30_000)  # the cancellation's e-mail and text
    wait_for(lambda: "Payment: refunded." in " ".join(page.evaluate("window.said")), message="refund announced")
    said = " ".join(page.evaluate("window.said"))
    assert said.count("Payment: refunded.") == 1 and "Order status: Cancelled." in said, said
    expect(page.get_by_role("link", name="Cancel this order")).to_have_count(0)
    page.screenshot(path=ARTIFACTS / f"order-cancelled-refunded-{width}.png", full_page=True)
    assert violations(page) == []
