"""4. The broker is down while customers check out (JSON API and HTML form)."""

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests
from celery import states
from django.db import close_old_connections
from django_celery_results.models import TaskResult

from orders.models import Order, WorkflowStep
from shop.models import Product
from tasks_admin.models import TaskRecord
from tests.support import wait_for

from .harness import Stack
from .scenarios import GOOD_CARD, RECOVERY_TASK, payloads, recovered_orders, schedule_recovery, stock_up

API_ORDERS = 50
HTML_ORDERS = 5
MAX_CHECKOUT_SECONDS = 3.0  # the publish retry policy gives up within about a second
ORDER_PAGE = re.compile(r"^/orders/(?P<id>[0-9a-f-]{36})/$")
CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def timed_checkout(stack: Stack, payload: dict) -> tuple[int, dict, float]:
    started = time.monotonic()
    status, body = stack.checkout(payload)
    return status, body, time.monotonic() - started


def html_checkout(stack: Stack, product: Product, n: int) -> tuple[requests.Response, float]:
    """A customer in a browser: product page, add to cart, checkout form, place the order."""
    browser = requests.Session()
    page = browser.get(f"{stack.web_url}/products/{product.slug}/", timeout=10)
    added = browser.post(
        f"{stack.web_url}/cart/add/",
        data={"csrfmiddlewaretoken": CSRF_FIELD.search(page.text)[1], "sku": product.sku, "quantity": "1"},
        timeout=10,
    )
    assert added.ok, added.status_code
    form = browser.get(f"{stack.web_url}/checkout/", timeout=10)
    started = time.monotonic()
    placed = browser.post(
        f"{stack.web_url}/checkout/",
        data={
            "csrfmiddlewaretoken": CSRF_FIELD.search(form.text)[1],
            "name": f"Browser {n}",
            "email": f"b{n}@example.com",
            "phone": f"+4479462{n:05d}",
            "shipping_address": f"{n} Form Street",
            "card_number": GOOD_CARD,
        },
        allow_redirects=False,
        timeout=30,
    )
    latency = time.monotonic() - started
    if placed.status_code == 302:  # the order page must render too, from the database alone
        page = browser.get(stack.web_url + placed.headers["Location"], timeout=10)
        assert page.status_code == 200, page.status_code
    return placed, latency


def test_checkouts_during_a_broker_outage_are_accepted_and_complete_once_it_is_back(
    make_stack: Callable[..., Stack], record: Callable[..., None]
) -> None:
    """Customers must not see errors or hang when the broker is away: their orders are kept, and
    the recovery job sends each workflow once the broker is back."""
    product = stock_up()
    stack = make_stack()
    stack.start(workers=1)
    schedule_recovery(every_seconds=2)
    beat = stack.start_beat()  # running through the outage, as in production
    # Redis stops as soon as a run of the job beat sends every 2 s has stored its result, often
    # before the worker acknowledged its message: the worker then acknowledges it after it has
    # reconnected, through the channel kombu closed (tasks_admin/kombu_fixes.py), and lives on.
    runs = TaskResult.objects.filter(task_id__in=TaskRecord.objects.filter(task_name=RECOVERY_TASK).values("task_id"))
    wait_for(runs.exists, timeout=30, interval=0.02, message="beat sending the recovery job")
    stack.redis.stop()

    with ThreadPoolExecutor(8) as pool:
        api = list(pool.map(lambda payload: timed_checkout(stack, payload), payloads(product, API_ORDERS)))
        html = list(pool.map(lambda n: html_checkout(stack, product, n), range(HTML_ORDERS)))
    slowest = max(latency for *_, latency in api + html)
    # Every customer got a clear answer at once, not an error or a hung request.
    assert [(status, body.get("status")) for status, body, _ in api] == [(202, "pending")] * API_ORDERS, api[:3]
    assert [answer.status_code for answer, _ in html] == [302] * HTML_ORDERS
    assert all(ORDER_PAGE.match(answer.headers["Location"]) for answer, _ in html)
    assert slowest < MAX_CHECKOUT_SECONDS, f"slowest checkout took {slowest:.2f}s"
    order_ids = [body["id"] for _, body, _ in api]
    order_ids += [ORDER_PAGE.match(answer.headers["Location"])["id"] for answer, _ in html]
    close_old_connections()
    # The outage really stopped every workflow: nothing reached a worker.
    assert set(Order.objects.filter(pk__in=order_ids).values_list("status", flat=True)) == {"pending"}
    assert not WorkflowStep.objects.filter(order_id__in=order_ids).exclude(state=states.PENDING).exists()
    # Redis stays away until beat has tried to send the recovery job into the outage: beat must live through that.
    wait_for(lambda: "Couldn't apply scheduled task" in beat.log(), timeout=30, message="beat sending into the outage")

    stack.redis.start()
    stack.wait_until_final(order_ids, timeout=60)
    audit = stack.audit(order_ids)
    recovered = recovered_orders(order_ids)
    not_run = WorkflowStep.objects.filter(order_id__in=order_ids).exclude(state=states.SUCCESS).count()
    record(
        "4. broker down at checkout",
        audit.figures(),
        faults=f"Redis stopped during {API_ORDERS} API and {HTML_ORDERS} HTML checkouts, started again once beat "
        "had failed to send the recovery job into the outage",
        notes=f"every checkout answered 202 pending / 302 to the order page, slowest {slowest:.2f} s; "
        f"the stuck-workflow recovery job (every 2 s) sent {len(recovered)} workflows once Redis was back",
    )
    assert beat.process.poll() is None, "beat died during the outage"
    assert stack.workers[0].process.poll() is None, "the worker died after the outage"
    # Each accepted order's workflow was sent by the recovery job, ran every step, and confirmed once.
    assert len(recovered) == len(order_ids) and not_run == 0
    assert audit.confirmed == len(order_ids), audit
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)
