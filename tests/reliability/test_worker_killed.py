"""1. A worker killed with SIGKILL in the middle of each kind of step."""
import time

from .scenarios import payloads, stock_up

# Each pauses once, right after its effect (charged, texted, counted, confirmed) and before
# the task is acknowledged: the worst moment to die.
PAUSE_AFTER = {
    "payment": "orders.payments:DemoGateway.charge",
    "SMS": "notifications.sms:HttpSmsProvider.send",
    "DB update": "orders.services:record_sales",
    "chord callback": "orders.services:confirm_order",
}
ORDERS = 50


def test_every_order_confirms_once_when_the_worker_is_killed_mid_step(make_stack, record):
    stack = make_stack(env={"FAULT_PAUSE_AFTER": ",".join(PAUSE_AFTER.values()), "FAULT_PAUSE_SECONDS": "3"})
    stack.start(workers=1)
    stack.smtp.slow_rcpt(3)  # the first e-mail hangs mid-conversation (before DATA)
    order_ids = stack.place_orders(payloads(stock_up(), ORDERS))

    hit: list[str] = []
    waiting = {**{kind: stack.fault_dir / f"paused-{target}" for kind, target in PAUSE_AFTER.items()}, "e-mail": None}
    deadline = time.monotonic() + 150
    while waiting and time.monotonic() < deadline:
        caught = [
            kind
            for kind, marker in waiting.items()
            if (marker.exists() if marker else stack.smtp.rcpt_waiting.is_set())
        ]
        if caught:
            stack.kill_worker(stack.workers[0])
            hit.append(" + ".join(caught))
            for kind in caught:
                del waiting[kind]
            stack.start_worker()
        time.sleep(0.05)
    assert not waiting, f"never caught mid-step: {sorted(waiting)}"

    stack.wait_until_final(order_ids, timeout=240)
    audit = stack.audit(order_ids)
    record(
        "1. worker SIGKILL mid-step",
        audit.figures(),
        faults=f"{len(hit)} SIGKILLs of the whole worker, mid-step: " + "; ".join(hit),
        notes="killed tasks come back after the visibility timeout (8 s in the test)",
    )
    assert audit.confirmed == ORDERS, audit
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)
