"""The admin pages staff use to follow orders, products, messages and task results."""

import pytest
from django.urls import reverse
from django_celery_results.models import TaskResult

from notifications.models import Notification
from orders.checkout import Customer, place_order
from orders.models import DemoGatewayCharge
from tests.factories import GOOD_CARD, make_product

pytestmark = pytest.mark.django_db


@pytest.fixture
def order():
    product = make_product(name="Kettle <b>bold</b>", stock=5)
    order = place_order(
        customer=Customer(name="Staff View", email="staff-view@example.com", phone="+442079460999"),
        shipping_address="1 Admin Road",
        items=[(product.sku, 2)],
        card_number=GOOD_CARD,
    )
    assert order.notifications.filter(channel="sms").exists()  # queued at checkout
    step = order.steps.get(name="charge_payment")
    TaskResult.objects.create(task_id=step.task_id, task_name="orders.tasks.charge_payment", status="SUCCESS")
    DemoGatewayCharge.objects.create(
        idempotency_key=f"order:{order.pk}:charge", reference="ch_demo_1", card_token="demo_x", amount=order.total
    )
    return order


@pytest.mark.parametrize(
    "url_name",
    [
        "admin:orders_order_changelist",
        "admin:shop_product_changelist",
        "admin:shop_category_changelist",
        "admin:notifications_notification_changelist",
        "admin:django_celery_results_taskresult_changelist",
        "admin:orders_demogatewaycharge_changelist",
        "admin:django_celery_beat_periodictask_changelist",
    ],
)
def test_changelists_render_for_staff(admin_client, order, url_name):
    response = admin_client.get(reverse(url_name))
    assert response.status_code == 200


def test_order_page_shows_its_lines_workflow_steps_payment_and_messages(admin_client, order):
    response = admin_client.get(reverse("admin:orders_order_change", args=[order.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert order.number in page
    for step in order.steps.all():
        assert step.name in page and step.task_id in page
    # The card: its last four digits, never the number.
    assert order.payment.card_last4 == "4242" and "4242" in page
    assert "4242 4242 4242 4242" not in page and "4242424242424242" not in page
    assert order.phone in page
    assert "Kettle &lt;b&gt;bold&lt;/b&gt;" in page and "Kettle <b>bold</b>" not in page


def test_order_search_finds_an_order_by_its_number(admin_client, order):
    response = admin_client.get(reverse("admin:orders_order_changelist"), {"q": order.number})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [order]


def test_staff_cannot_add_orders_outside_checkout(admin_client):
    assert admin_client.get(reverse("admin:orders_order_add")).status_code == 403


@pytest.mark.parametrize(
    "url_name",
    ["admin:notifications_notification_change", "admin:orders_demogatewaycharge_change"],
)
def test_records_of_what_was_sent_and_charged_are_read_only(admin_client, order, url_name):
    obj = Notification.objects.first() if "notification" in url_name else DemoGatewayCharge.objects.get()
    url = reverse(url_name, args=[obj.pk])
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"recipient": "someone-else@example.com"})
    assert response.status_code == 403
