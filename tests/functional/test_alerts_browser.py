"""Staff see the open business alerts on the task dashboard in a real browser, follow an alert's
link to the order concerned, and acknowledge an alert with a note (the README's screenshot)."""

import uuid
from datetime import timedelta
from unittest import mock

import pytest
from celery import states
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from orders.checkout import Customer, place_order
from orders.models import Order, Payment
from tasks_admin import alerts
from tasks_admin.models import Alert, TaskRecord
from tests.factories import GOOD_CARD, make_product, reach
from tests.functional.test_browser import ARTIFACTS, browser_page  # noqa: F401  (the fixture)
from tests.functional.test_browser_console import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def paid_long_ago(name: str, minutes: float) -> Order:
    with mock.patch("orders.workflow.publish", return_value=False):  # its workflow never reached a worker
        order = place_order(
            customer=Customer(name=name, email="late@example.com", phone="+442079461234"),
            shipping_address="1 Slow Lane",
            items=[(make_product().sku, 1)],
            card_number=GOOD_CARD,
        )
    reach(order, Order.Status.PAID)
    Payment.objects.filter(order=order).update(
        status="captured", captured_at=timezone.now() - timedelta(minutes=minutes)
    )
    return order


def test_the_dashboard_lists_open_alerts_with_links_and_staff_acknowledge_one(browser_page, live_server, worker):  # noqa: F811
    from playwright.sync_api import expect

    late = [paid_long_ago("Ada", 14), paid_long_ago("Grace", 12)]
    TaskRecord.objects.create(
        task_id=str(uuid.uuid4()),
        task_name="notifications.tasks.deliver_message",
        state=states.FAILURE,
        sent_at=timezone.now() - timedelta(minutes=3),
        finished_at=timezone.now() - timedelta(minutes=2),
        exception_type="PermanentProviderError",
    )
    every_5_min, _ = IntervalSchedule.objects.get_or_create(every=5, period=IntervalSchedule.MINUTES)
    job = PeriodicTask.objects.create(
        name="Cancel stale orders", task="orders.tasks.cancel_stale_orders", interval=every_5_min
    )
    PeriodicTask.objects.filter(pk=job.pk).update(date_changed=timezone.now() - timedelta(minutes=25))
    alerts.evaluate()

    page = browser_page
    log_in(page, live_server.url)
    page.goto(live_server.url + "/admin/tasks/dashboard/")
    paid = page.locator('#alerts tr[data-alert="order-paid-not-confirmed"]')
    expect(paid).to_contain_text("2 orders paid more than 10 min ago, not confirmed")
    for order in late:
        expect(paid.get_by_role("link", name=order.number)).to_be_visible()
    expect(
        page.locator('#alerts tr[data-alert="periodic-job-late"][data-subject="Cancel stale orders"]')
    ).to_be_visible()

    # Acknowledge the dead letters alert from its page, with a note.
    page.locator('#alerts tr[data-alert="dead-letters"]').get_by_role("link", name="Dead letters").click()
    page.get_by_label("Note").fill("Looking at the SMS provider")
    page.get_by_test_id("acknowledge-button").click()
    expect(page.get_by_text("Acknowledged: Dead letters.")).to_be_visible()
    assert Alert.objects.get(rule__key="dead-letters").acknowledgement_note == "Looking at the SMS provider"

    page.goto(live_server.url + "/admin/tasks/dashboard/")
    expect(page.locator('#alerts tr[data-alert="dead-letters"]')).to_contain_text(
        "operator: Looking at the SMS provider"
    )
    page.screenshot(path=ARTIFACTS / "dashboard-alerts.png")

    paid.get_by_role("link", name=late[0].number).click()  # to the order concerned
    expect(page.locator("h2, h1").filter(has_text=late[0].number).first).to_be_visible()
