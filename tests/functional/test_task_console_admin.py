"""The task console's admin pages: who may see and do what, search, filters, the capped count."""

import uuid
from datetime import timedelta

import pytest
from celery import states
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from orders.checkout import Customer, place_order
from orders.models import Order
from tasks_admin import subjects
from tasks_admin.admin import CappedCountPaginator
from tasks_admin.models import TaskAction, TaskRecord
from tests.factories import GOOD_CARD, make_product, reach

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:tasks_admin_taskrecord_changelist"


def make_record(state: str = states.FAILURE, name: str = "orders.tasks.send_confirmation_sms", **fields) -> TaskRecord:
    return TaskRecord.objects.create(
        task_id=str(uuid.uuid4()), task_name=name, state=state, sent_at=timezone.now(), args=["x"], **fields
    )


def staff_user(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def viewer(client) -> Client:
    client.force_login(staff_user("viewer", "view_taskrecord", "view_deadletter", "view_order"))
    return client


def post_actions(client: Client, record: TaskRecord) -> dict[str, int]:
    return {
        f"{admin_name}:{action}": client.post(
            reverse(f"admin:tasks_admin_{admin_name}_{action}", args=[record.pk]), {"reason": "x"}
        ).status_code
        for admin_name in ("taskrecord", "deadletter")
        for action in ("retry", "revoke", "terminate", "resolve")
    }


def test_view_only_staff_sees_history_but_every_action_is_forbidden(viewer):
    failed, queued, running = make_record(), make_record(states.PENDING), make_record(states.STARTED)

    page = viewer.get(reverse(CHANGELIST))
    assert page.status_code == 200
    html = page.content.decode()
    assert "task-retry" not in html and "task-revoke" not in html and "task-terminate" not in html
    assert "retry_selected" not in html and "revoke_selected" not in html

    detail = viewer.get(reverse("admin:tasks_admin_taskrecord_change", args=[failed.pk]))
    assert detail.status_code == 200 and "Send the task again" not in detail.content.decode()
    for record in (failed, queued, running):
        assert set(post_actions(viewer, record).values()) == {403}
    assert not TaskAction.objects.exists()
    assert TaskRecord.objects.get(pk=queued.pk).state == states.PENDING


def test_staff_without_the_view_permission_cannot_see_the_history(client):
    client.force_login(staff_user("nobody"))
    assert client.get(reverse(CHANGELIST)).status_code == 403
    assert client.get(reverse("admin:tasks_admin_taskrecord_change", args=[make_record().pk])).status_code == 403


def test_each_action_needs_its_own_permission(client):
    client.force_login(staff_user("retrier", "view_taskrecord", "retry_task"))
    make_record(states.FAILURE)
    running = make_record(states.STARTED)

    html = client.get(reverse(CHANGELIST)).content.decode()
    assert "task-retry" in html and "task-terminate" not in html
    assert client.post(reverse("admin:tasks_admin_taskrecord_terminate", args=[running.pk])).status_code == 403
    assert client.post(reverse("admin:tasks_admin_taskrecord_revoke", args=[running.pk])).status_code == 403


def test_action_views_take_post_only_with_a_csrf_token(admin_user):
    record = make_record()
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    url = reverse("admin:tasks_admin_taskrecord_retry", args=[record.pk])

    assert client.get(url).status_code == 405
    assert client.post(url, {"reason": "no token"}).status_code == 403
    assert not TaskAction.objects.exists()


def test_refused_actions_explain_why(admin_client):
    succeeded = make_record(states.SUCCESS)
    response = admin_client.post(reverse("admin:tasks_admin_taskrecord_retry", args=[succeeded.pk]), follow=True)
    assert "Retry is not possible for this task now (it is succeeded)." in response.content.decode()
    assert not TaskAction.objects.exists()


@pytest.mark.parametrize(
    ("changelist", "action", "held"),
    [
        (CHANGELIST, "retry_selected", "revoke_task"),
        (CHANGELIST, "terminate_selected", "retry_task"),
        ("admin:tasks_admin_deadletter_changelist", "requeue_selected", "resolve_deadletter"),
        ("admin:tasks_admin_deadletter_changelist", "resolve_selected", "retry_task"),
    ],
)
def test_a_forged_bulk_action_the_user_may_not_run_is_forbidden(client, changelist, action, held):
    client.force_login(staff_user("half", "view_taskrecord", "view_deadletter", held))
    failed, running = make_record(states.FAILURE), make_record(states.STARTED)

    response = client.post(
        reverse(changelist), {"action": action, "_selected_action": [failed.pk, running.pk], "reason": "forged"}
    )

    assert response.status_code == 403
    assert not TaskAction.objects.exists()
    assert TaskRecord.objects.get(pk=failed.pk).resolved_at is None


def test_each_list_posts_its_row_actions_to_its_own_admin(admin_client):
    failed = make_record(states.FAILURE)

    tasks = admin_client.get(reverse(CHANGELIST)).content.decode()
    dead_letters = admin_client.get(reverse("admin:tasks_admin_deadletter_changelist")).content.decode()

    assert reverse("admin:tasks_admin_taskrecord_retry", args=[failed.pk]) in tasks
    assert reverse("admin:tasks_admin_deadletter_retry", args=[failed.pk]) in dead_letters


def test_continue_workflow_needs_its_permission(client):
    product = make_product()
    order = place_order(
        customer=Customer(name="A", email="a@example.com", phone="+442079460000"),
        shipping_address="x",
        items=[(product.sku, 1)],
        card_number=GOOD_CARD,
    )
    client.force_login(staff_user("orders-viewer", "view_order"))
    page = client.get(reverse("admin:orders_order_change", args=[order.pk])).content.decode()
    assert 'data-testid="workflow-graph"' in page and "Continue workflow" not in page
    assert client.post(reverse("admin:orders_order_continue", args=[order.pk])).status_code == 403


def test_search_by_task_id_order_number_and_task_name(admin_client):
    product = make_product()
    order = place_order(
        customer=Customer(name="A", email="a@example.com", phone="+442079460000"),
        shipping_address="x",
        items=[(product.sku, 1)],
        card_number=GOOD_CARD,
    )
    mine = make_record(**subjects.of_object(order))
    make_record(name="orders.tasks.record_sales")
    other = make_record(name="orders.tasks.charge_payment")

    def found(term: str) -> set[int]:
        response = admin_client.get(reverse(CHANGELIST), {"q": term})
        assert response.status_code == 200
        return {r.pk for r in response.context["cl"].result_list}

    # The checkout recorded the order's six workflow tasks too.
    of_order = set(TaskRecord.objects.about(order).values_list("pk", flat=True))
    charges = set(TaskRecord.objects.filter(task_name="orders.tasks.charge_payment").values_list("pk", flat=True))
    assert len(of_order) == 7 and mine.pk in of_order and other.pk in charges and len(charges) == 2
    assert found(mine.task_id) == {mine.pk}
    assert found(order.number) == of_order
    assert found(order.number.lower()) == of_order
    assert found("charge_payment") == charges
    assert found("no-such-thing") == set()


def test_filters_by_state_and_queue(admin_client):
    failed = make_record(states.FAILURE, queue="notifications")
    make_record(states.SUCCESS, queue="notifications")
    make_record(states.FAILURE, queue="orders")

    response = admin_client.get(reverse(CHANGELIST), {"state": states.FAILURE, "queue": "notifications"})
    assert [r.pk for r in response.context["cl"].result_list] == [failed.pk]


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Auckland"])
def test_the_list_shows_todays_times_short_other_days_with_their_date_and_each_in_full_on_hover(
    admin_client, settings, zone
):
    """In the time zone the staff read (a day's edge falls elsewhere in Auckland than in UTC)."""
    settings.TIME_ZONE = zone
    now = timezone.localtime()
    today = now.replace(hour=0, minute=0, second=1, microsecond=250_000)
    earlier = today - timedelta(days=3)
    TaskRecord.objects.filter(pk=make_record(states.SUCCESS).pk).update(sent_at=today, finished_at=earlier)

    html = admin_client.get(reverse(CHANGELIST)).content.decode()

    assert f'<span title="{today.isoformat(sep=" ", timespec="milliseconds")}">00:00:01</span>' in html
    assert f'<span title="{earlier.isoformat(sep=" ", timespec="milliseconds")}">{earlier:%b %d} 00:00</span>' in html


def test_the_changelist_counts_at_most_the_cap(admin_client, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "CAP", 5)
    for _ in range(8):
        make_record(states.SUCCESS)

    html = admin_client.get(reverse(CHANGELIST)).content.decode()

    assert "more than 5" in html


def test_the_changelist_query_count_does_not_grow_with_rows(admin_client, django_assert_max_num_queries):
    for _ in range(40):
        make_record(states.SUCCESS)
    with django_assert_max_num_queries(12):
        assert admin_client.get(reverse(CHANGELIST)).status_code == 200


def test_the_failed_tasks_page_sends_as_many_queries_for_10_rows_as_for_50(admin_client):
    """Each row's buttons are what its owner offers: a failed task's depend on whether it was
    resolved, an order's step's on its order. Loading either per row was one query per row."""
    product = make_product(stock=50)
    orders = {}
    for status in (Order.Status.FAILED, Order.Status.ON_HOLD, Order.Status.CONFIRMED, Order.Status.PENDING):
        order = place_order(
            customer=Customer(name="A", email="a@example.com", phone="+442079460000"),
            shipping_address="x",
            items=[(product.sku, 1)],
            card_number=GOOD_CARD,
        )
        orders[status] = reach(order, status)
    kinds = [  # (task, state, its order's status): the button each shows
        ("orders.tasks.charge_payment", states.FAILURE, Order.Status.FAILED),  # Charge again
        ("orders.tasks.create_shipment", states.FAILURE, Order.Status.ON_HOLD),  # Continue order
        ("orders.tasks.send_confirmation_sms", states.FAILURE, Order.Status.CONFIRMED),  # Send again
        ("orders.tasks.charge_payment", states.PENDING, Order.Status.PENDING),  # Cancel order
        ("tests.fakes.tasks.record_arguments", states.FAILURE, None),  # Retry
        ("tests.fakes.tasks.record_arguments", states.STARTED, None),  # Terminate
    ]

    def add_rows(count: int) -> None:
        for index in range(count):
            name, state, status = kinds[index % len(kinds)]
            make_record(state, name, **(subjects.of_object(orders[status]) if status else {}))

    def page() -> tuple[int, str]:
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(reverse(CHANGELIST), {"state__exact": states.FAILURE})
        assert response.status_code == 200
        return len(queries), response.content.decode()

    add_rows(15)  # 10 failed
    few, html = page()
    add_rows(100)
    many, html = page()

    assert html.count('class="action-select"') == 50
    for label in ("Charge again", "Continue order", "Send again", "Retry"):
        assert f">{label}</button>" in html
    assert many == few


def test_the_detail_page_shows_arguments_links_and_traceback(admin_client):
    parent = make_record(states.SUCCESS, name="orders.tasks.charge_payment")
    child = make_record(parent_id=parent.task_id, root_id=parent.task_id, exception_type="PermanentProviderError")
    child.args = [{"__type__": "decimal", "__value__": "12.3400"}, "<b>not bold</b>"]
    child.save()

    html = admin_client.get(reverse("admin:tasks_admin_taskrecord_change", args=[child.pk])).content.decode()

    assert "&quot;__value__&quot;: &quot;12.3400&quot;" in html
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html and "<b>not bold</b>" not in html
    assert reverse("admin:tasks_admin_taskrecord_change", args=[parent.pk]) in html
    assert "PermanentProviderError" in html
