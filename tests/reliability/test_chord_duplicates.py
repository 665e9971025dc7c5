"""7. Every chord header task delivered twice (the same message published again)."""

from uuid import UUID

from django_celery_results.models import ChordCounter

from orders.models import Order, Shipment
from tasks_admin.models import ChordPart, TaskRecord

from .scenarios import payloads, stock_up

HEADER = ("orders.tasks.create_shipment", "orders.tasks.record_sales")
ORDERS = 50


def test_the_chord_callback_runs_once_after_all_its_header_tasks(make_stack, record):
    stack = make_stack(env={"FAULT_DUPLICATE_PUBLISH": ",".join(HEADER)})
    stack.start(workers=1)
    order_ids = stack.place_orders(payloads(stock_up(), ORDERS))

    stack.wait_until_final(order_ids, timeout=180)

    audit = stack.audit(order_ids)
    header_runs = TaskRecord.objects.about_any(Order, order_ids).filter(task_name__in=HEADER)
    deliveries = sum(header_runs.values_list("attempts", flat=True))
    callbacks = {
        UUID(r.subject_id): r
        for r in TaskRecord.objects.about_any(Order, order_ids).filter(task_name="orders.tasks.confirm_order")
    }
    # When each header task first did its work, from the shipment's row and the sales stamp (a
    # duplicate run afterwards does nothing, but is recorded as the step's last run).
    early = 0
    for order in Order.objects.filter(pk__in=order_ids):
        shipped = Shipment.objects.get(order=order).created_at
        header_done = max(shipped, order.sales_recorded_at)
        early += callbacks[order.pk].started_at < header_done
    record(
        "7. chord header delivered twice",
        audit.figures(),
        faults=f"each of the {len(HEADER) * ORDERS} header task messages published twice ({deliveries} runs)",
        notes="each header task counted once (unique part per group and task); callback ran once per chord, "
        "never before its last header task; no chord counter left",
    )
    assert deliveries > len(HEADER) * ORDERS  # the duplicates were delivered and run
    assert audit.confirmed == ORDERS
    assert sorted(r.attempts for r in callbacks.values()) == [1] * ORDERS  # the callback ran exactly once
    assert early == 0
    assert not ChordCounter.objects.exists() and not ChordPart.objects.exists()
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)
