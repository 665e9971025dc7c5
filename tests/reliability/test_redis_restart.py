"""3. Redis restarted (no persistence) while workflows are queued and running."""

import time
from collections import Counter
from collections.abc import Callable

from django.db import close_old_connections

from orders.models import Order
from tests.support import wait_for

from .harness import FINAL_STATUSES, Stack
from .scenarios import payloads, recovered_orders, schedule_recovery, stock_up

ORDERS = 50


def statuses(order_ids: list[str]) -> Counter:
    close_old_connections()
    return Counter(Order.objects.filter(pk__in=order_ids).values_list("status", flat=True))


def test_every_order_confirms_once_after_redis_restarts_mid_workflow(
    make_stack: Callable[..., Stack], record: Callable[..., None]
) -> None:
    """A broker restart loses every queued message: workers must reconnect on their own and the
    recovery job must finish what was lost, without charging or messaging anyone twice."""
    # Slower charges (1 s) keep most workflows queued or running when Redis goes away.
    stack = make_stack(env={"PAYMENT_DEMO_LATENCY": "1"})
    stack.start(workers=1)
    worker = stack.workers[0]
    order_ids = stack.place_orders(payloads(stock_up(), ORDERS))

    before = wait_for(
        lambda: (counts := statuses(order_ids))["processing"] >= 1 and counts, timeout=60, message="workflows running"
    )
    in_flight = ORDERS - sum(before[s] for s in FINAL_STATUSES)
    stack.redis.stop()  # no persistence: every queued, reserved and unacknowledged message is gone
    time.sleep(2)
    stack.redis.start()  # same port: the worker must find it again by itself
    # Beat starts with Redis back, so each workflow it sends again is one the outage lost.
    schedule_recovery(every_seconds=2)
    stack.start_beat()

    stack.wait_until_final(order_ids, timeout=75)
    audit = stack.audit(order_ids)
    recovered = recovered_orders(order_ids)
    record(
        "3. Redis restarted",
        audit.figures(),
        faults=f"Redis killed and restarted empty 2 s later, with {before['confirmed']} orders confirmed "
        f"and {in_flight} queued or running",
        notes=f"the worker reconnected by itself; the stuck-workflow recovery job (every 2 s, "
        f"STUCK_WORKFLOW_MINUTES=0.1) sent {len(recovered)} lost workflows again and finished them",
    )
    assert in_flight >= ORDERS // 2, f"the restart came too late to hit running workflows: {before}"
    # The same worker process carried on: it reconnected rather than being restarted.
    assert worker.process.poll() is None and stack.workers == [worker]
    assert worker.log().count("Connected to redis://") >= 2, worker.log()[-3000:]
    # The outage really lost messages, and the recovery job is what finished those orders.
    assert recovered, "no workflow was sent again: the restart lost nothing?"
    assert audit.confirmed == ORDERS, audit
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)
