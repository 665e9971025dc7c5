"""Orders and faults shared by the scenarios."""

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

from notifications.models import Notification
from shop.models import Product
from tests.factories import make_product
from tests.support import wait_for

GOOD_CARD = "4242 4242 4242 4242"


def stock_up(units: int = 10_000) -> Product:
    return make_product(stock=units, price="9.90", name="Reliability Mug")


def payloads(product: Product, count: int, name: str = "Customer") -> list[dict]:
    return [
        {
            "customer": {"name": f"{name} {n}", "email": f"r{n}@example.com", "phone": f"+4479461{n:05d}"},
            "shipping_address": f"{n} Chaos Street",
            "items": [{"sku": product.sku, "quantity": 1}],
            "card_number": GOOD_CARD,
        }
        for n in range(count)
    ]


@contextmanager
def no_email_between_accepted_and_recorded(stack) -> Iterator[None]:
    """While the block runs, the SMTP server accepts no e-mail, and every one it accepted before is
    recorded as sent: a host killed inside it is not killed in the milliseconds between a server's
    acceptance and the shop's record, which SMTP, having no idempotency key, cannot close
    (docs/reliability.md, *What remains*; it made scenarios 17 and 22 fail by chance). E-mails in
    flight wait at RCPT, as a slow server keeps them: the kill interrupts them before acceptance;
    one already past RCPT is accepted before the block starts (FakeSmtpServer.paused), else it
    could be accepted just after `all_recorded` read the list (scenario 19, CI of a422d5a)."""

    def all_recorded() -> bool:
        accepted = {message.message_id for message in stack.smtp.received()}
        sent = Notification.objects.filter(provider_message_id__in=accepted, status=Notification.Status.SENT)
        return sent.count() == len(accepted)

    with stack.smtp.paused():
        wait_for(all_recorded, timeout=60, message="every accepted e-mail recorded as sent")
        yield


RECOVERY_TASK = "orders.tasks.recover_stuck_workflows"


def schedule_recovery(every_seconds: int = 2) -> None:
    """The stuck-workflow recovery job on a test clock: every few seconds instead of every 2 min
    (STUCK_WORKFLOW_MINUTES is 0.1 in the stack), as staff would edit it in the admin."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    interval, _ = IntervalSchedule.objects.get_or_create(every=every_seconds, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.update_or_create(
        name="Recover stuck workflows", defaults={"task": RECOVERY_TASK, "interval": interval, "enabled": True}
    )


def run_recovery(stack, every_seconds: int = 2) -> None:
    """Beat with the stuck-workflow recovery on a test clock: it also settles the step records a
    killed pool process took with it (orders/maintenance.py, tasks_admin/writebehind.py)."""
    schedule_recovery(every_seconds)
    stack.start_beat()


def settled_step_records(stack) -> int:
    """Step records the recovery job settled, from its log lines in the workers' logs."""
    logs = "\n".join(worker.log() for worker in stack.workers)
    return sum(int(n) for n in re.findall(r"Settled (\d+) step records", logs))


def recovered_orders(order_ids: list[str]) -> set[str]:
    """Numbers of the given orders whose workflow the recovery job sent again, read from the
    job's own results ({order number: steps sent}) in django-celery-results."""
    import json

    from django.db import close_old_connections
    from django_celery_results.models import TaskResult

    from orders.models import Order
    from tasks_admin.models import TaskRecord

    close_old_connections()
    numbers = set(Order.objects.filter(pk__in=order_ids).values_list("number", flat=True))
    sent: set[str] = set()
    runs = TaskRecord.objects.filter(task_name=RECOVERY_TASK).values("task_id")
    for result in TaskResult.objects.filter(task_id__in=runs, status="SUCCESS").values_list("result", flat=True):
        sent.update(json.loads(result or "{}") or {})
    return sent & numbers


# Each pauses once, right after its effect (charged, texted, counted, confirmed) and before
# the task is acknowledged, until the worker is killed: the worst moment to die.
PAUSE_AFTER = {
    "payment": "orders.payments:DemoGateway.charge",
    "SMS": "notifications.sms:HttpSmsProvider.send",
    "DB update": "orders.services:record_sales",
    "chord callback": "orders.services:confirm_order",
}
PAUSE_ENV = {"FAULT_PAUSE_AFTER": ",".join(PAUSE_AFTER.values())}
# The killed worker runs one task at a time, so that each kill hits the step it caught and
# nothing else: a second pool process would die wherever it happened to be, now and then in
# the few milliseconds between an SMTP server taking an e-mail and its record as sent, which
# no idempotency key covers (docs/reliability.md, "What remains").
ONE_TASK_AT_A_TIME = ("--concurrency", "1")


def kill_worker_mid_each_step(
    stack, timeout: float = 150, pauses: dict[str, str] = PAUSE_AFTER
) -> tuple[list[str], float]:
    """SIGKILL the worker (started with ONE_TASK_AT_A_TIME) whenever a step pauses after its
    effect (the stack runs with PAUSE_ENV, or FAULT_PAUSE_AFTER naming `pauses`), and while the
    first e-mail is held mid-conversation; start a new one each time. Returns the steps caught at
    each kill and the monotonic time of the last kill."""
    email = stack.smtp.hold_next()  # the first e-mail's RCPT is answered only after the kill (before DATA)
    email_timeout = float(stack.env()["EMAIL_TIMEOUT"])
    hit: list[str] = []
    last_kill = time.monotonic()
    waiting: dict[str, str | None] = {**pauses, "e-mail": None}  # kind → paused target
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        caught = [
            kind
            for kind, target in waiting.items()
            if ((stack.fault_dir / f"paused-{target}").exists() if target else email.arrived.is_set())
        ]
        if caught:
            stack.kill_worker(stack.workers[0])
            last_kill = time.monotonic()
            # The premise: each was still mid-step when its worker died.
            gone_on = [
                kind for kind in caught if waiting[kind] and (stack.fault_dir / f"resumed-{waiting[kind]}").exists()
            ]
            assert not gone_on, f"{gone_on} went on before the kill (cut short by a time limit?)"
            if "e-mail" in caught:
                assert email.held_for() < email_timeout, "the e-mail's client had given up before the kill"
                email.release()  # to a connection that is gone: nothing is delivered
            hit.append(" + ".join(caught))
            for kind in caught:
                del waiting[kind]
            stack.start_worker(*ONE_TASK_AT_A_TIME)
        time.sleep(0.05)
    assert not waiting, f"never caught mid-step: {sorted(waiting)}"
    return hit, last_kill
