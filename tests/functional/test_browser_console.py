"""Staff use the task console in a real browser: find a failed task, retry it, follow the
new run; see an order's workflow graph with the state of each step."""

import re

import pytest
from celery import states
from django.contrib.auth.models import User

from orders.models import Order
from tasks_admin.models import TaskRecord
from tests.factories import make_product, order_payload
from tests.fakes import tasks as fake_tasks
from tests.functional.test_browser import ARTIFACTS, browser_page  # noqa: F401  (the fixture)
from tests.support import WORKFLOW_STEPS, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, base_url: str) -> None:
    User.objects.create_superuser("operator", "operator@example.com", "correct horse")
    page.goto(base_url + "/admin/")
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("correct horse")
    page.get_by_role("button", name="Log in").click()


def test_find_a_failed_task_retry_it_and_see_the_new_run_succeed(browser_page, live_server, worker):  # noqa: F811
    from playwright.sync_api import expect

    page = browser_page
    fake_tasks.fail_next_run("browser")
    result = fake_tasks.record_arguments.delay("browser", 42)
    wait_for(lambda: TaskRecord.objects.filter(task_id=result.id, state=states.FAILURE).exists(), message="failed")

    log_in(page, live_server.url)
    page.goto(live_server.url + "/admin/tasks_admin/taskrecord/")
    page.locator("#searchbar").fill(result.id)
    page.locator("#changelist-search").get_by_role("button", name="Search").click()
    row = page.locator("#result_list tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator(".task-state")).to_have_text("failed")
    page.screenshot(path=ARTIFACTS / "console-search.png", full_page=True)
    row.get_by_role("button", name="Retry").click()

    # On the new run's page: it says what was done and links back to the failed run.
    expect(page.get_by_text("Sent tests.fakes.tasks.record_arguments again")).to_be_visible()
    expect(page.get_by_test_id("retry-of")).to_have_text(result.id)
    state = page.get_by_test_id("task-state")
    for _ in range(50):  # the page shows the state when loaded: reload until the new run finished
        if state.inner_text() == "succeeded":
            break
        page.wait_for_timeout(200)
        page.reload()
    expect(state).to_have_text("succeeded")
    page.screenshot(path=ARTIFACTS / "console-retried.png", full_page=True)

    page.get_by_test_id("retry-of").click()
    expect(page.get_by_test_id("retried-as")).to_contain_text("succeeded")
    expect(page.get_by_test_id("task-state")).to_have_text("failed")


def test_the_order_page_draws_the_workflow_with_each_steps_state(browser_page, live_server, worker, sms_gateway):  # noqa: F811
    from playwright.sync_api import expect

    page = browser_page
    sms_gateway.script(400)  # the SMS gateway refuses: a dead letter, the order stays confirmed
    response = live_server_client_post(live_server.url, order_payload((make_product(), 1)))
    order = Order.objects.get(pk=response["id"])
    sms = TaskRecord.objects.about(order).filter(task_name="orders.tasks.send_confirmation_sms")
    wait_for(lambda: sms.filter(state=states.FAILURE).exists(), message="the SMS refused")
    wait_for(lambda: TaskRecord.objects.about(order).filter(state=states.SUCCESS).count() >= 5, message="records")
    assert Order.objects.get(pk=order.pk).status == Order.Status.CONFIRMED

    log_in(page, live_server.url)
    page.goto(live_server.url + f"/admin/orders/order/{order.pk}/change/")
    graph = page.get_by_test_id("workflow-graph")
    expect(graph.locator("svg.workflow-graph")).to_be_visible()
    steps = (*WORKFLOW_STEPS, "send_confirmation_email", "send_confirmation_sms")
    states_by_step = {step: graph.locator(f'g.node[data-step="{step}"]').get_attribute("data-state") for step in steps}
    assert states_by_step == {step: states.SUCCESS for step in steps} | {"send_confirmation_sms": states.FAILURE}
    # Confirmed: nothing to continue. The refused message is the message's owner's to deal with.
    expect(page.get_by_role("button", name=re.compile("Continue workflow"))).to_have_count(0)
    page.screenshot(path=ARTIFACTS / "order-workflow-graph.png", full_page=True)

    graph.locator('g.node[data-step="send_confirmation_sms"]').click()
    expect(page.get_by_test_id("task-state")).to_have_text("failed")
    expect(page.get_by_test_id("workflow-graph")).to_be_visible()
    expect(page.get_by_role("button", name="Send again")).to_be_visible()
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)


def live_server_client_post(base_url: str, payload: dict) -> dict:
    import json
    import urllib.request

    request = urllib.request.Request(
        base_url + "/api/orders/", json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)
