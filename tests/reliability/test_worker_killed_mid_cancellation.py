"""14. A worker killed with SIGKILL in the middle of each step of the cancellation workflow
(orders/cancellation_workflow.py): after the refund, after the stock is released, after the
text, after the sales are put right, in the chord's callback, and with the e-mail mid-send.
Every order ends cancelled, refunded once, its stock released once, its customer told once."""

import json
import urllib.request
from collections import Counter

from django.db import close_old_connections

from orders.models import DemoGatewayCharge, Order
from shop.models import Product
from tests.fakes import switches
from tests.support import wait_for

from .scenarios import ONE_TASK_AT_A_TIME, kill_worker_mid_each_step, payloads, stock_up

ORDERS = 20
UNITS = 10_000
PAUSES = {
    "refund": "orders.payments:DemoGateway.refund",
    "stock released": "orders.cancellation:release_stock",
    "SMS": "notifications.sms:HttpSmsProvider.send",
    "sales put right": "orders.cancellation:record_cancellation_sales",
    "chord callback": "orders.cancellation:finish",
}


def cancel(stack, order_id: str) -> int:
    request = urllib.request.Request(
        f"{stack.web_url}/api/orders/{order_id}/cancel/", json.dumps({}).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def statuses(order_ids: list[str]) -> dict[str, int]:
    close_old_connections()
    return dict(Counter(Order.objects.filter(pk__in=order_ids).values_list("status", flat=True)))


def test_every_cancellation_refunds_releases_and_tells_once_when_the_worker_is_killed_mid_step(make_stack, record):
    stack = make_stack(env={"FAULT_PAUSE_AFTER": ",".join(PAUSES.values()), "FAULT_SWITCHES": switches.SHIPMENT})
    stack.start(workers=0)
    stack.start_worker(*ONE_TASK_AT_A_TIME)
    product = stock_up(UNITS)
    # Paid orders that have not shipped: the shipment step fails for good, so each is put on
    # hold, charged, its sales counted — and cancellable.
    with switches.failing(stack.fault_dir, switches.SHIPMENT):
        order_ids = stack.place_orders(payloads(product, ORDERS))
        wait_for(lambda: statuses(order_ids) == {"on_hold": ORDERS}, timeout=120, message="every order on hold")
    assert {cancel(stack, order_id) for order_id in order_ids} == {202}

    hit, _ = kill_worker_mid_each_step(stack, pauses=PAUSES)

    stack.wait_until_final(order_ids, timeout=240)
    audit = stack.audit(order_ids)
    charges = DemoGatewayCharge.objects.filter(idempotency_key__in=[f"order:{pk}:charge" for pk in order_ids])
    refund_requests = sum(charges.values_list("refund_requests", flat=True))
    product.refresh_from_db()
    record(
        "14. worker SIGKILL mid-cancellation",
        audit.figures() | {"confirmed": 0},
        faults=f"{len(hit)} SIGKILLs of the whole worker, mid-step of the cancellation workflow: " + "; ".join(hit),
        notes=f"{ORDERS} paid orders (on hold) cancelled over the API; all cancelled, each charge refunded once "
        f"({refund_requests} refund requests for {charges.count()} charges: the repeats were absorbed by the "
        f"gateway's key), stock back to {product.stock}/{UNITS}, units sold {product.units_sold}",
    )
    assert len(hit) >= 2
    assert statuses(order_ids) == {"cancelled": ORDERS}
    assert charges.count() == ORDERS and not charges.filter(refunded_at__isnull=True).exists()
    assert refund_requests > ORDERS  # at least one refund was asked again after a kill, and absorbed
    assert (product.stock, product.units_sold) == (UNITS, 0)  # released once, sales put right once
    assert Product.objects.get(pk=product.pk).stock == UNITS
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)
    told = {
        (m.to[0], m.subject) for o in Order.objects.filter(pk__in=order_ids) for m in stack.smtp.received(to=o.email)
    }
    assert len(told) == ORDERS  # one cancellation e-mail each
    assert len({r.idempotency_key for r in stack.sms.accepted()}) == ORDERS  # one text each
