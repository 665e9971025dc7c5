"""1. A worker killed with SIGKILL in the middle of each kind of step."""

from .scenarios import (
    ONE_TASK_AT_A_TIME,
    PAUSE_ENV,
    kill_worker_mid_each_step,
    payloads,
    run_recovery,
    settled_step_records,
    stock_up,
)

ORDERS = 50


def test_every_order_confirms_once_when_the_worker_is_killed_mid_step(make_stack, record):
    stack = make_stack(env=PAUSE_ENV)
    stack.start(workers=0)
    run_recovery(stack)
    order_ids = stack.place_orders(payloads(stock_up(), ORDERS))
    # The worker starts only now: a step pauses (4 s to its time limit) once the kill loop watches,
    # however long placing the orders took on a busy machine.
    stack.start_worker(*ONE_TASK_AT_A_TIME)

    hit, _ = kill_worker_mid_each_step(stack)

    stack.wait_until_final(order_ids, timeout=240)
    audit = stack.audit(order_ids)
    record(
        "1. worker SIGKILL mid-step",
        audit.figures(),
        faults=f"{len(hit)} SIGKILLs of the whole worker, mid-step: " + "; ".join(hit),
        notes="killed tasks come back after the visibility timeout (8 s in the test); the recovery job settled "
        f"{settled_step_records(stack)} step records the killed processes had not written yet",
    )
    assert len(hit) >= 2  # at least two kills, each catching at least one step
    assert audit.confirmed == ORDERS, audit
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)
