"""WCAG 2.2 AA in a real browser: an axe-core audit of every page a customer and staff browse,
at 1280 px and 375 px (no serious or critical violation); a checkout done with the keyboard
alone, with visible focus; the dashboard refreshing in place, pausable, announcing politely.

To audit more pages, add a Visit to CUSTOMER_VISITS or STAFF_VISITS: each list is walked in
order in one browser, so a visit may rely on what the ones before it did (a cart, a login).
"""

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from celery import states
from django.contrib.auth.models import User
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from orders import services, workflow
from orders.models import Order
from tasks_admin import dashboard
from tasks_admin.models import PLANNED, SKIPPED, TaskRecord
from tests.factories import GOOD_CARD, make_category, make_product
from tests.functional.accessibility import Audit, Visit, tab_to
from tests.functional.test_browser import ARTIFACTS, browser_page  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse"


@dataclass
class Site:
    """What the visits need: the live server's address and the data made for them."""

    url: str
    category_slug: str = ""
    product_slug: str = ""
    order: Order | None = None
    periodic_task_id: int = 0
    failed_record_id: int = 0


@pytest.fixture
def no_workflow(monkeypatch, settings):
    """The order's workflow is not sent: the test runs its steps, so the page shows it running."""
    monkeypatch.setattr(workflow, "publish", lambda order, canvas: True)
    settings.PAYMENT_DEMO_LATENCY = 0


def shop_data(url: str) -> Site:
    teas = make_category("Tea")
    product = make_product(name="Jasmine Pearls", price="8.40", stock=6, category=teas)
    make_product(name="Assam Breakfast", price="5.10", stock=3, category=teas)
    make_product(name="Sold-out Sencha", price="9.90", stock=0, category=teas)
    make_product(name="Ceramic Cup", price="14.00", stock=8, category=make_category("Cups"))
    return Site(url=url, category_slug=teas.slug, product_slug=product.slug)


def _fill_checkout(page, card: str) -> None:
    page.get_by_label("Full name").fill("Grace Hopper")
    page.get_by_label("Email").fill("grace@example.com")
    page.get_by_label("Phone").fill("+1 415 555 0100")
    page.get_by_label("Shipping address").fill("1 Harbor Way\nArlington, VA")
    page.get_by_label("Card number").fill(card)


def _checkout_with_errors(page, site: Site) -> None:
    page.goto(site.url + "/checkout/")
    _fill_checkout(page, "1234")
    page.get_by_label("Email").fill("not an e-mail")
    page.get_by_role("button", name=re.compile("Place order")).click()
    page.locator(".field-error").first.wait_for()


def _order_running(page, site: Site) -> None:
    _fill_checkout(page, GOOD_CARD)
    page.get_by_role("button", name=re.compile("Place order")).click()
    page.wait_for_url(re.compile(r"/orders/[0-9a-f-]{36}/$"))
    site.order = Order.objects.get(email="grace@example.com")
    services.charge_payment(str(site.order.pk))  # paid; the shipment is still to come


def _order_final(page, site: Site) -> None:
    order_id = str(site.order.pk)
    services.create_shipment(order_id)
    services.record_sales(order_id)
    services.confirm_order(order_id)
    page.goto(f"{site.url}/orders/{order_id}/")
    page.get_by_test_id("order-status").filter(has_text="Confirmed").wait_for()


def _cancel_page(page, site: Site) -> None:
    page.goto(f"{site.url}/orders/{site.order.pk}/")
    page.get_by_role("link", name="Cancel this order").click()
    page.get_by_role("button", name="Yes, cancel my order").wait_for()


def _lookup_not_found(page, site: Site) -> None:
    page.goto(f"{site.url}/orders/find/?number={site.order.number}")
    page.get_by_label("E-mail address used at checkout").fill("nobody@example.com")
    page.get_by_role("button", name="Find my order").click()
    page.get_by_role("alert").wait_for()


def _add_to_cart(page, site: Site) -> None:
    page.get_by_role("button", name="Add to cart").click()
    page.get_by_text("added to your cart").wait_for()
    page.goto(site.url + "/cart/")


CUSTOMER_VISITS = [
    Visit("product list", lambda page, site: page.goto(site.url + "/")),
    Visit("search", lambda page, site: page.goto(site.url + "/?q=tea")),
    Visit("search, nothing found", lambda page, site: page.goto(site.url + "/?q=nothing-like-this")),
    Visit("category", lambda page, site: page.goto(f"{site.url}/?category={site.category_slug}")),
    Visit("product", lambda page, site: page.goto(f"{site.url}/products/{site.product_slug}/")),
    Visit("cart", _add_to_cart),
    Visit("checkout", lambda page, site: page.goto(site.url + "/checkout/")),
    Visit("checkout with errors", _checkout_with_errors),
    Visit("order page, workflow running", _order_running),
    Visit("cancel this order", _cancel_page),
    Visit("order page, final", _order_final),
    Visit("find my order", lambda page, site: page.goto(site.url + "/orders/find/")),
    Visit("find my order, not found", _lookup_not_found),
]


def test_every_customer_page_passes_a_wcag_22_aa_audit(browser_page, live_server, no_workflow):  # noqa: F811
    page, site, audit = browser_page, shop_data(live_server.url), Audit()

    for visit in CUSTOMER_VISITS:
        visit.go(page, site)
        audit.page(page, visit.name)

    assert audit.pages == [visit.name for visit in CUSTOMER_VISITS]
    assert not audit.found, audit.report()


def console_data(url: str) -> Site:
    """An order with its workflow's records in every state, a dead letter, a periodic task."""
    site = shop_data(url)
    product = make_product(stock=5)
    from orders.checkout import Customer, place_order

    order = place_order(
        customer=Customer(name="Ada", email="ada@example.com", phone="+442079460997"),
        shipping_address="1 Test Street",
        items=[(product.sku, 1)],
        card_number=GOOD_CARD,
    )
    now = timezone.now()
    for state in (PLANNED, SKIPPED, states.PENDING, states.STARTED, states.RETRY, states.SUCCESS, states.REVOKED):
        TaskRecord.objects.create(
            task_id=str(uuid.uuid4()),
            task_name="tests.fakes.tasks.record_arguments",
            state=state,
            sent_at=now,
        )
    failed = TaskRecord.objects.create(
        task_id=str(uuid.uuid4()),
        task_name="orders.tasks.send_confirmation_sms",
        state=states.FAILURE,
        sent_at=now - timedelta(minutes=2),
        started_at=now - timedelta(minutes=2),
        finished_at=now - timedelta(minutes=1),
        runtime=0.25,
        args=[str(order.pk)],
        subject_type="orders.order",
        subject_id=str(order.pk),
    )
    periodic = PeriodicTask.objects.create(
        name="Low stock alert",
        task="shop.tasks.send_low_stock_alert",
        interval=IntervalSchedule.objects.create(every=5, period=IntervalSchedule.MINUTES),
    )
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    site.order, site.periodic_task_id, site.failed_record_id = order, periodic.pk, failed.pk
    return site


def _log_in(page, site: Site) -> None:
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(site.url + "/admin/")


def _admin(path: str) -> callable:
    return lambda page, site: page.goto(site.url + "/admin/" + path.format(site=site))


STAFF_VISITS = [
    Visit("admin login", _admin("login/")),
    Visit("admin index", _log_in),
    Visit("task list", _admin("tasks_admin/taskrecord/")),
    Visit("task list, failed", _admin("tasks_admin/taskrecord/?state__exact=FAILURE")),
    Visit("task detail", _admin("tasks_admin/taskrecord/{site.failed_record_id}/change/")),
    Visit("dead letters", _admin("tasks_admin/deadletter/")),
    Visit("dashboard", _admin("tasks/dashboard/")),
    Visit("alerts", _admin("tasks_admin/alert/")),
    Visit("alert rules", _admin("tasks_admin/alertrule/")),
    Visit("orders list", _admin("orders/order/")),
    Visit("order admin with its graph", _admin("orders/order/{site.order.pk}/change/")),
    Visit("periodic tasks", _admin("django_celery_beat/periodictask/")),
    Visit("periodic task", _admin("django_celery_beat/periodictask/{site.periodic_task_id}/change/")),
]


def test_every_console_page_passes_a_wcag_22_aa_audit(browser_page, live_server, broker_url, no_workflow):  # noqa: F811
    page, site, audit = browser_page, console_data(live_server.url), Audit()

    for visit in STAFF_VISITS:
        visit.go(page, site)
        audit.page(page, visit.name)

    assert audit.pages == [visit.name for visit in STAFF_VISITS]
    assert not audit.found, audit.report()


def _fail_a_task() -> None:
    TaskRecord.objects.create(
        task_id=str(uuid.uuid4()),
        task_name="tests.fakes.tasks.record_arguments",
        state=states.FAILURE,
        sent_at=timezone.now(),
    )


def test_the_dashboard_refreshes_in_place_announces_changes_and_can_be_paused(
    browser_page,  # noqa: F811
    live_server,
    broker_url,
    monkeypatch,
):
    from playwright.sync_api import expect

    monkeypatch.setattr(dashboard, "REFRESH_SECONDS", 1)
    page, site = browser_page, Site(url=live_server.url)
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    page.goto(site.url + "/admin/login/?next=/admin/tasks/dashboard/")
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    dead_letters = page.locator('[data-metric="dead-letters"]')
    expect(dead_letters).to_have_text("0")
    assert page.locator('meta[http-equiv="refresh"]').count() == 0
    announcer = page.locator("[data-refresh-announcer]")
    assert announcer.get_attribute("aria-live") == "polite"
    page.evaluate("window.loadedOnce = true")  # gone if the page reloads

    _fail_a_task()
    expect(dead_letters).to_have_text("1", timeout=15_000)
    expect(announcer).to_contain_text("Dead letters: 1 (was 0)")
    assert page.evaluate("window.loadedOnce") is True

    toggle = page.get_by_role("button", name="Pause updates")
    toggle.click()
    expect(page.get_by_role("button", name="Resume updates")).to_be_visible()
    expect(announcer).to_have_text("Dashboard updates paused.")
    _fail_a_task()
    page.wait_for_timeout(3000)  # three refresh periods, paused: nothing is fetched
    expect(dead_letters).to_have_text("1")

    page.get_by_role("button", name="Resume updates").click()
    expect(dead_letters).to_have_text("2", timeout=15_000)
    expect(announcer).to_contain_text("Dead letters: 2 (was 1)")
    assert page.evaluate("window.loadedOnce") is True


def press_enter_and_load(page) -> None:
    """Enter on a focused link or button that loads a page: wait for it before the next Tab."""
    with page.expect_navigation():
        page.keyboard.press("Enter")


def test_a_customer_checks_out_with_the_keyboard_alone_and_sees_where_the_focus_is(
    browser_page,  # noqa: F811
    live_server,
    no_workflow,
):
    from playwright.sync_api import expect

    page, site = browser_page, shop_data(live_server.url)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(site.url + "/")
    keys = page.keyboard  # no mouse: every step is a key

    tab_to(page, page.get_by_role("link", name="Jasmine Pearls"))
    press_enter_and_load(page)
    expect(page.get_by_role("heading", name="Jasmine Pearls")).to_be_visible()
    tab_to(page, page.get_by_label("Quantity"))
    keys.press("Control+A")
    keys.type("2")
    tab_to(page, page.get_by_role("button", name="Add to cart"))
    press_enter_and_load(page)
    expect(page.get_by_test_id("cart-count")).to_have_text("2")

    tab_to(page, page.get_by_role("link", name=re.compile("^Cart")))
    press_enter_and_load(page)
    tab_to(page, page.get_by_role("link", name="Check out"))
    press_enter_and_load(page)
    expect(page.get_by_role("heading", name="Checkout")).to_be_visible()
    for label, text in [
        ("Full name", "Grace Hopper"),
        ("Email", "grace@example.com"),
        ("Phone", "+1 415 555 0100"),
        ("Shipping address", "1 Harbor Way"),
        ("Card number", GOOD_CARD),
    ]:
        tab_to(page, page.get_by_label(label), limit=8)
        keys.type(text)
    tab_to(page, page.get_by_role("button", name=re.compile("Place order")), limit=2)
    page.screenshot(path=ARTIFACTS / "keyboard-checkout-focus.png")
    press_enter_and_load(page)

    expect(page).to_have_url(re.compile(r"/orders/[0-9a-f-]{36}/$"))
    order = Order.objects.get(email="grace@example.com")
    assert order.customer_name == "Grace Hopper" and str(order.total) == "16.80"


def test_the_live_order_page_announces_what_changed_politely(browser_page, live_server, no_workflow):  # noqa: F811
    from playwright.sync_api import expect

    from orders.checkout import Customer, place_order

    product = make_product(stock=3)
    order = place_order(
        customer=Customer(name="Ada", email="ada@example.com", phone="+442079460997"),
        shipping_address="1 Test Street",
        items=[(product.sku, 1)],
        card_number=GOOD_CARD,
    )
    services.charge_payment(str(order.pk))
    page = browser_page
    page.goto(live_server.url + order.get_absolute_url())
    announcer = page.get_by_test_id("order-announcer")
    assert announcer.get_attribute("aria-live") == "polite" and announcer.get_attribute("role") == "status"
    page.wait_for_timeout(1500)  # a few polls with nothing new: nothing is said
    expect(announcer).to_have_text("")
    page.evaluate("window.loadedOnce = true")  # gone if the page reloads

    for step in ("create_shipment", "record_sales", "confirm_order"):
        getattr(services, step)(str(order.pk))

    expect(page.get_by_test_id("order-status")).to_have_text("Confirmed", timeout=20_000)
    expect(announcer).to_contain_text("Order status: Confirmed.")
    assert page.evaluate("window.loadedOnce") is True
