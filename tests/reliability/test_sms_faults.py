"""6. The SMS provider misbehaves, in three phases: half its replies are 5xx, then it answers
only once the client has timed out (the message was delivered all the same), then it rate-limits
with 429 and Retry-After. One number per phase is refused with a 400.

Every SMS must be delivered exactly once or end as a dead letter (its order confirmed all the
same): 5xx, timeouts and 429 are retried (429 no sooner than Retry-After), the Idempotency-Key
turns the retry of a message that timed out into a repeat the gateway does not deliver again,
and a 4xx is not retried.
"""

from collections import defaultdict
from collections.abc import Callable

from notifications.models import Notification
from orders.models import Order
from tasks_admin.models import DeadLetter
from tests.fakes.sms_gateway import FakeSmsGateway, SmsRequest

from .scenarios import payloads, stock_up

PER_PHASE = 18
SMS_TIMEOUT = 1.0  # the stack's SMS_TIMEOUT
RETRY_AFTER = 1.0  # at most TASK_RETRY_BACKOFF_MAX (2 s in the stack): the shop caps longer ones
SMS_TASK = "orders.tasks.send_confirmation_sms"
PHASES: dict[str, Callable[[FakeSmsGateway], None]] = {
    "5xx": lambda gateway: gateway.fail_randomly(0.5, status=503, seed=6),
    "timeouts": lambda gateway: gateway.late(at_most=30 * SMS_TIMEOUT),
    "429": lambda gateway: gateway.rate_limit(RETRY_AFTER, limit=3),
}


def waits_after_429(requests: list[SmsRequest]) -> list[tuple[float, float]]:
    """(Retry-After, seconds until the same message came again) for every 429 answered."""
    by_key: dict[str, list[SmsRequest]] = defaultdict(list)
    for request in sorted(requests, key=lambda r: r.at):
        by_key[request.idempotency_key].append(request)
    return [
        (request.retry_after, following.at - request.at)
        for attempts in by_key.values()
        for request, following in zip(attempts, attempts[1:], strict=False)
        if request.status == 429
    ]


def test_every_sms_is_sent_once_or_dead_lettered_through_provider_faults(make_stack, record):
    stack = make_stack()
    stack.start(workers=0)
    stack.start_worker("-Q", "orders,celery")
    # E-mail and SMS on threads, as in production: a reply that never comes holds a thread, not the shop.
    stack.start_worker("-Q", "notifications", "--pool", "threads", "--concurrency", "8")
    gateway = stack.sms
    product = stock_up()
    batches = payloads(product, PER_PHASE * len(PHASES))

    placed: dict[str, list[str]] = {}
    refused: set[str] = set()  # order ids
    for n, (phase, set_mode) in enumerate(PHASES.items()):
        batch = batches[n * PER_PHASE : (n + 1) * PER_PHASE]
        gateway.refuse(batch[0]["customer"]["phone"], status=400)
        set_mode(gateway)
        placed[phase] = stack.place_orders(batch)
        refused.add(placed[phase][0])
        stack.wait_until_final(placed[phase], timeout=60)
    gateway.healthy()

    order_ids = [order_id for ids in placed.values() for order_id in ids]
    audit = stack.audit(order_ids)
    orders = {str(order.pk): order for order in Order.objects.filter(pk__in=order_ids)}
    dead = {str(d.order_id): d for d in DeadLetter.objects.filter(task_name=SMS_TASK, order_id__in=order_ids)}
    sent = {n.order_id: n for n in Notification.objects.filter(order_id__in=order_ids, channel="sms")}
    phone_phase = {orders[order_id].phone: phase for phase, ids in placed.items() for order_id in ids}
    requests = gateway.received()
    statuses = {phase: defaultdict(int) for phase in PHASES}
    for request in requests:
        statuses[phone_phase[request.to]]["repeat" if request.repeat else request.status] += 1
    waits = waits_after_429(requests)
    exhausted = set(dead) - refused
    waited = f"{min(w for _, w in waits):.2f}–{max(w for _, w in waits):.2f} s" if waits else "none"

    record(
        "6. SMS provider faults",
        audit.figures(),
        faults=f"{len(requests)} SMS requests. 5xx phase: {statuses['5xx'][503]} of "
        f"{sum(statuses['5xx'].values())} answered 503 (50 %, seeded); timeouts: "
        f"{statuses['timeouts'][200]} replies held until the client's {SMS_TIMEOUT:g} s timeout had passed "
        f"(delivered anyway); 429 phase: {statuses['429'][429]} × 429 with Retry-After {RETRY_AFTER:g} s; "
        f"{len(refused)} numbers refused with 400",
        notes=f"{sum(len(gateway.delivered(o.phone)) for o in orders.values())} SMS delivered, none twice; "
        f"{sum(s['repeat'] for s in statuses.values())} retries of timed-out messages answered by the gateway's "
        f"Idempotency-Key, not delivered again; waits after a 429: {waited} (Retry-After {RETRY_AFTER:g} s); "
        f"dead letters: {len(refused)} refused "
        f"numbers (1 attempt each; every order confirmed all the same) + {len(exhausted)} retries exhausted",
    )

    # The faults were injected.
    assert statuses["5xx"][503] >= 3 and statuses["429"][429] >= 3, dict(statuses)
    assert audit.confirmed == len(order_ids), audit  # a message that fails for good stops no paid order
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)
    for order_id, order in orders.items():
        delivered = gateway.delivered(order.phone)
        assert order.status == Order.Status.CONFIRMED, order
        if order_id in dead:  # a dead letter: the SMS was not sent, and is failed for staff to send again
            assert (sent[order.pk].status, delivered) == (Notification.Status.FAILED, []), order
        else:  # sent exactly once, and the shop recorded the message the customer got
            assert len(delivered) == 1, [(r.status, r.repeat) for r in gateway.received(order.phone)]
            assert sent[order.pk].provider_message_id == delivered[0].message_id
    for order_id in placed["timeouts"]:
        if order_id not in refused:  # it timed out, and its retry was a repeat of the delivered message
            assert any(r.repeat for r in gateway.received(orders[order_id].phone)), orders[order_id]
    # A 400 is attempted once and ends as a dead letter.
    assert refused <= set(dead)
    for order_id in refused:
        assert [r.status for r in gateway.received(orders[order_id].phone)] == [400]
        assert dead[order_id].exception_type == "PermanentProviderError"
    # Only retries exhausted may add dead letters, never a refusal of a message that could be retried.
    assert all(dead[order_id].exception_type == "TransientProviderError" for order_id in exhausted)
    # Every 429 was waited out for at least its Retry-After (50 ms for the clocks' rounding).
    assert waits, "no 429 was retried"
    assert all(waited >= retry_after - 0.05 for retry_after, waited in waits), sorted(waits)
