"""Small things staff meet in the console: every process lists the same tasks, each list's buttons
post to its own admin, a forged bulk action is forbidden, orders cannot be deleted."""

import json
import subprocess
import sys
import uuid
from datetime import timedelta

import pytest
from celery import states
from django.contrib import admin
from django.contrib.admin.templatetags.admin_list import items_for_result
from django.contrib.auth.models import Permission, User
from django.template import engines
from django.urls import reverse
from django.utils import timezone

from orders.checkout import Customer, place_order
from orders.models import Order
from tasks_admin.models import TaskRecord, subject_key
from tests.factories import GOOD_CARD, make_product
from tests.processes import ROOT

pytestmark = pytest.mark.django_db


def make_record(state: str = states.FAILURE, name: str = "tests.fakes.tasks.record_arguments") -> TaskRecord:
    return TaskRecord.objects.create(task_id=str(uuid.uuid4()), task_name=name, state=state, sent_at=timezone.now())


def test_a_fresh_web_process_filters_by_every_task_the_project_defines():
    """Each gunicorn worker is a fresh process: its task filter must not depend on what it happened to import."""
    code = (
        "import django, json; django.setup(); "
        "from tasks_admin.admin import shop_task_names; print(json.dumps(shop_task_names()))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    names = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"shop.tasks.send_low_stock_alert", "tasks_admin.tasks.cleanup_task_history"} <= set(names)
    assert "orders.tasks.charge_payment" in names and "notifications.tasks.deliver_message" in names


def test_each_list_posts_its_row_buttons_to_its_own_admin(admin_client):
    record = make_record()

    tasks = admin_client.get(reverse("admin:tasks_admin_taskrecord_changelist")).content.decode()
    letters = admin_client.get(reverse("admin:tasks_admin_deadletter_changelist")).content.decode()

    assert f'formaction="{reverse("admin:tasks_admin_taskrecord_retry", args=[record.pk])}"' in tasks
    assert f'formaction="{reverse("admin:tasks_admin_deadletter_retry", args=[record.pk])}"' in letters
    assert "/deadletter/" not in tasks.split('id="result_list"')[1]


def test_a_bulk_action_forged_by_a_view_only_user_is_forbidden(client):
    user = User.objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=["view_taskrecord"]))
    client.force_login(user)
    record = make_record()

    response = client.post(
        reverse("admin:tasks_admin_taskrecord_changelist"),
        {"action": "retry_selected", "_selected_action": [record.pk], "index": 0},
    )

    assert response.status_code == 403
    assert not TaskRecord.objects.filter(retry_of=record).exists()


def test_orders_cannot_be_deleted_from_the_admin(admin_client):
    order = place_order(
        customer=Customer(name="Keep", email="keep@example.com", phone="+442079460000"),
        shipping_address="1 Lane",
        items=[(make_product().sku, 1)],
        card_number=GOOD_CARD,
    )

    assert admin_client.get(reverse("admin:orders_order_delete", args=[order.pk])).status_code == 403
    page = admin_client.get(reverse("admin:orders_order_changelist")).content.decode()
    assert "delete_selected" not in page
    assert Order.objects.filter(pk=order.pk).exists()


def test_a_row_checkbox_is_djangos_own(admin_client):
    """The console writes each row's checkbox itself (it was a fifth of a failed tasks' page): the
    admin's script selects rows by this markup, and a screen reader names the row by it."""
    record = make_record(name='tests.fakes.tasks.record_arguments<"&>')
    model_admin = admin.site.get_model_admin(TaskRecord)

    page = admin_client.get(reverse("admin:tasks_admin_taskrecord_changelist")).content.decode()

    djangos = admin.ModelAdmin.action_checkbox(model_admin, record)
    assert model_admin.action_checkbox(record) == djangos
    assert djangos in page and "&lt;&quot;&amp;&gt;" in djangos
    letters = admin_client.get(reverse("admin:tasks_admin_deadletter_changelist")).content.decode()
    assert djangos in letters


def test_the_console_rows_are_djangos_own(admin_client):
    """The console writes its lists' cells itself (PlainRowsMixin, tasks_admin/adminkit.py: Django's
    handling of each cell was a fifth of a page over a million tasks): every cell of both lists
    as Django's items_for_result writes it, for records with and without their optional fields,
    text to escape, an order and blanks."""
    order = place_order(
        customer=Customer(name="Rows", email="rows@example.com", phone="+442079460000"),
        shipping_address="1 Lane",
        items=[(make_product().sku, 1)],
        card_number=GOOD_CARD,
    )
    now = timezone.now()
    make_record(name='tests.fakes.tasks.record_arguments<"&>')
    TaskRecord.objects.create(
        task_id=str(uuid.uuid4()),
        task_name="orders.tasks.charge_payment",
        state=states.FAILURE,
        exception_type="DeclinedError",
        exception_message="<b>declined</b> & refunded",
        subject_type=Order._meta.label_lower,
        subject_id=subject_key(order),
        queue="orders",
        worker="celery@host-1",
        runtime=0.004,
        attempts=3,
        sent_at=now - timedelta(seconds=5),
        started_at=now - timedelta(seconds=4),
        finished_at=now,
    )
    TaskRecord.objects.create(
        task_id=str(uuid.uuid4()),
        task_name="shop.tasks.nightly",
        state=states.SUCCESS,
        worker="  ",
        runtime=2.5,
        sent_at=now,
    )

    for changelist in ("admin:tasks_admin_taskrecord_changelist", "admin:tasks_admin_deadletter_changelist"):
        response = admin_client.get(reverse(changelist))
        cl = response.context["cl"]
        djangos = [list(items_for_result(cl, record, None)) for record in cl.result_list]
        page = response.content.decode()

        # The order's planned workflow is listed too, in the task history.
        assert {"orders.tasks.charge_payment", 'tests.fakes.tasks.record_arguments<"&>'} <= {
            record.task_name for record in cl.result_list
        }
        assert cl.model_admin.row_cells(cl) == djangos
        for cells in djangos:
            assert f"<tr>{''.join(cells)}</tr>" in page


def test_the_console_sidebar_is_djangos_own(client, admin_client):
    """The console's lists write Django's navigation sidebar once for what it shows
    (console_list.nav_sidebar): each page's sidebar is Django's for that user and page, and a
    permission granted shows at once, never a sidebar written for another user or page."""
    tasks, letters = (
        reverse("admin:tasks_admin_taskrecord_changelist"),
        reverse("admin:tasks_admin_deadletter_changelist"),
    )
    orders = reverse("admin:orders_order_changelist")
    user = User.objects.create_user("navigator", "n@example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_taskrecord"))
    client.force_login(user)

    def sidebar(the_client, url: str) -> tuple[str, str]:
        response = the_client.get(url)
        assert response.status_code == 200
        page = response.content.decode()
        djangos = engines["django"].engine.render_to_string(
            "admin/nav_sidebar.html",
            {"available_apps": response.context["available_apps"], "request": response.wsgi_request},
        )
        assert djangos in page
        return page, djangos

    everything, _ = sidebar(admin_client, tasks)
    assert f'<a href="{orders}">' in everything and f'<a href="{tasks}" aria-current="page">' in everything
    viewer, viewers = sidebar(client, tasks)
    assert f'href="{orders}"' not in viewers and f'<a href="{tasks}" aria-current="page">' in viewers
    user.user_permissions.add(Permission.objects.get(codename="view_order"))
    granted, _ = sidebar(client, tasks)
    assert f'<a href="{orders}">' in granted
    on_letters, _ = sidebar(admin_client, letters)
    assert f'<a href="{letters}" aria-current="page">' in on_letters
    assert f'<a href="{tasks}">' in on_letters
