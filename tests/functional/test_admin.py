"""The admin pages staff use to follow orders, products, messages and task results."""

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.urls import reverse
from django_celery_results.models import TaskResult

from notifications.models import Notification
from orders import metrics as order_metrics
from orders import services
from orders.admin import OrderAdmin
from orders.checkout import Customer, place_order
from orders.models import DemoGatewayCharge, Order, WorkflowStep
from tests.factories import GOOD_CARD, make_product, reach

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_gateway_latency(settings):
    settings.PAYMENT_DEMO_LATENCY = 0


@pytest.fixture
def order():
    product = make_product(name="Kettle <b>bold</b>", stock=5)
    order = place_order(
        customer=Customer(name="Staff View", email="staff-view@example.com", phone="+442079460999"),
        shipping_address="1 Admin Road",
        items=[(product.sku, 2)],
        card_number=GOOD_CARD,
    )
    # Charged, shipped, counted and confirmed, as its workflow leaves it: its messages are queued.
    for step in (services.charge_payment, services.create_shipment, services.record_sales, services.confirm_order):
        step(str(order.pk))
    assert order.notifications.filter(channel="sms").exists()
    step = order.steps.get(name="charge_payment")
    TaskResult.objects.create(task_id=step.task_id, task_name="orders.tasks.charge_payment", status="SUCCESS")
    return order


@pytest.mark.parametrize(
    "url_name",
    [
        "admin:orders_order_changelist",
        "admin:shop_product_changelist",
        "admin:shop_category_changelist",
        "admin:notifications_notification_changelist",
        "admin:tasks_admin_taskrecord_changelist",
        "admin:orders_demogatewaycharge_changelist",
        "admin:django_celery_beat_periodictask_changelist",
    ],
)
def test_changelists_render_for_staff(admin_client, order, url_name):
    response = admin_client.get(reverse(url_name))
    assert response.status_code == 200


def test_task_results_are_shown_by_the_task_console_not_by_the_stock_list(admin_client):
    # The stock list duplicates Tasks and is the slow page over a large history (docs/benchmarks.md).
    assert not admin.site.is_registered(TaskResult)
    assert "/admin/django_celery_results/taskresult/" not in admin_client.get(reverse("admin:index")).content.decode()


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
    delete = reverse(url_name.replace("_change", "_delete"), args=[obj.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert type(obj).objects.filter(pk=obj.pk).exists()


def change_form_data(client, order) -> dict:
    """What the order's change form posts back as it was rendered (the inlines are read-only)."""
    context = client.get(reverse("admin:orders_order_change", args=[order.pk])).context
    data = {name: value for name, value in context["adminform"].form.initial.items() if value is not None}
    for inline in context["inline_admin_formsets"]:
        formset = inline.formset
        data |= {f"{formset.prefix}-{k}": v for k, v in formset.management_form.initial.items()}
        for form in formset.forms:
            data[f"{form.prefix}-id"] = form.instance.pk
            data[f"{form.prefix}-order"] = order.pk
    return data


def test_orders_cannot_be_deleted_from_the_admin(admin_client, order):
    # An order is money and stock: it is cancelled through its state machine, never deleted.
    url = reverse("admin:orders_order_delete", args=[order.pk])

    assert admin_client.get(url).status_code == 403
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    changelist = admin_client.get(reverse("admin:orders_order_changelist"))
    assert changelist.status_code == 200 and "delete_selected" not in changelist.content.decode()
    forged = admin_client.post(
        reverse("admin:orders_order_changelist"),
        {"action": "delete_selected", "_selected_action": [order.pk], "post": "yes"},
    )
    assert forged.status_code in (200, 302, 403)
    assert Order.objects.filter(pk=order.pk).exists()


def test_a_contact_edit_is_audited_with_its_old_and_new_value_and_the_status_is_not_editable(admin_client, order):
    data = change_form_data(admin_client, order) | {"phone": "+442079460111", "status": "cancelled"}

    response = admin_client.post(reverse("admin:orders_order_change", args=[order.pk]), data)

    assert response.status_code == 302
    order.refresh_from_db()
    assert (order.phone, order.status) == ("+442079460111", Order.Status.CONFIRMED)
    event = order.events.get()
    assert (event.kind, event.actor, event.user.username) == ("contact_changed", "staff:admin", "admin")
    assert event.changes == {"phone": ["+442079460999", "+442079460111"]}
    page = admin_client.get(reverse("admin:orders_order_change", args=[order.pk])).content.decode()
    assert "contact_changed" in page and "+442079460111" in page


def test_saving_the_form_unchanged_audits_nothing(admin_client, order):
    response = admin_client.post(
        reverse("admin:orders_order_change", args=[order.pk]), change_form_data(admin_client, order)
    )

    assert response.status_code == 302
    assert not order.events.exists()


def held_order() -> Order:
    product = make_product(stock=5)
    order = place_order(
        customer=Customer(name="On Hold", email="hold@example.com", phone="+442079460998"),
        shipping_address="1 Admin Road",
        items=[(product.sku, 1)],
        card_number=GOOD_CARD,
    )
    services.charge_payment(str(order.pk))
    services.settle_step(order.pk, "create_shipment", WorkflowStep.State.FAILURE, error="RuntimeError: warehouse")
    services.stop_after_failure(str(order.pk))
    return order


def test_staff_continue_an_order_on_hold_from_its_page(admin_client, admin_user, django_capture_on_commit_callbacks):
    order = held_order()

    with django_capture_on_commit_callbacks(execute=False) as sent:
        response = admin_client.post(
            reverse("admin:orders_order_continue", args=[order.pk]), {"reason": "warehouse is back"}, follow=True
        )

    assert response.status_code == 200
    assert f"Continued the workflow of {order.number}" in response.content.decode()
    order.refresh_from_db()
    assert order.status == Order.Status.PAID
    assert len(sent) == 1  # its unfinished steps, once committed
    event = order.events.get(kind="resume")
    assert (event.actor, event.user, event.note) == ("staff:admin", admin_user, "warehouse is back")


def test_a_confirmed_order_cannot_be_continued_and_staff_are_told_why(admin_client, order):
    response = admin_client.post(reverse("admin:orders_order_continue", args=[order.pk]), follow=True)

    assert "cannot continue" in response.content.decode()
    order.refresh_from_db()
    assert order.status == Order.Status.CONFIRMED
    assert not order.events.exists()


def test_continuing_an_order_needs_its_permission(client, django_user_model):
    order = held_order()
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_order"))
    client.force_login(viewer)

    assert client.post(reverse("admin:orders_order_continue", args=[order.pk])).status_code == 403
    assert Order.objects.get(pk=order.pk).status == Order.Status.ON_HOLD


def test_a_contact_edit_writes_the_contact_only_not_the_status_the_workflow_moved_on(admin_client, monkeypatch):
    """Between loading the order for the staff's POST and saving it, its charge starts and a
    /metrics scrape folds its move into the status tally. Saving the whole row wrote back the
    status as loaded (processing -> pending: the database refused it, a 500) and the tally's
    counted_as; the edit writes the contact fields alone."""
    order = place_order(
        customer=Customer(name="Race", email="race@example.com", phone="+442079460999"),
        shipping_address="1 Admin Road",
        items=[(make_product(stock=5).sku, 1)],
        card_number=GOOD_CARD,
    )
    data = change_form_data(admin_client, order) | {"phone": "+442079460111"}
    save_form = OrderAdmin.save_form

    def meanwhile(self, request, form, change):
        reach(Order.objects.get(pk=order.pk), Order.Status.PROCESSING)  # the worker, meanwhile
        order_metrics.BY_STATUS.fold()  # and a scrape
        return save_form(self, request, form, change)

    monkeypatch.setattr(OrderAdmin, "save_form", meanwhile)
    response = admin_client.post(reverse("admin:orders_order_change", args=[order.pk]), data)

    assert response.status_code == 302
    order.refresh_from_db()
    assert (order.phone, order.status) == ("+442079460111", Order.Status.PROCESSING)
    assert {labels: n for labels, n in order_metrics.BY_STATUS.counts().items() if n} == {("processing",): 1}
