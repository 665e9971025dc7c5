"""11. A deploy: SIGTERM to the running worker's main process, a new worker started at once."""

import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.db import close_old_connections
from django.utils import timezone

from notifications.models import Notification
from orders.models import WorkflowStep
from tests.fakes.sms_gateway import Reply
from tests.support import wait_for

from .harness import Stack
from .scenarios import payloads, stock_up

ORDERS = 50
SOFT_SHUTDOWN = 5.0  # CELERY_SOFT_SHUTDOWN_TIMEOUT in the stack
SLOW_EMAIL_SECONDS = 3  # e-mails in flight that finish within the window
HANGING_SMS_SECONDS = 12  # an SMS gateway call that outlasts the window: must go back to the queue
# As in the Procfile: SIGTERM starts Celery's soft shutdown (a warm shutdown bounded by the
# window, then running tasks handed back). Without it SIGTERM waits for them however long.
PRODUCTION_WORKER_ENV = {"REMAP_SIGTERM": "SIGQUIT"}


def in_flight(order_ids: list[str]) -> tuple[bool, bool]:
    """(the hanging SMS is being sent, an e-mail is being sent), from the messages' leases."""
    close_old_connections()
    sending = Notification.objects.filter(order_id__in=order_ids, status="pending", locked_until__gt=timezone.now())
    return sending.filter(channel="sms").exists(), sending.filter(channel="email").exists()


def exit_time(process: subprocess.Popen) -> float:
    process.wait(timeout=30)
    return time.monotonic()


def test_a_deploy_lets_running_steps_finish_or_hands_them_back_and_loses_nothing(
    make_stack: Callable[..., Stack], record: Callable[..., None]
) -> None:
    """Every deploy stops workers mid-task: the stop must be bounded (below an orchestrator's kill
    timeout), and whatever it interrupts must come back and complete exactly once."""
    product = stock_up()
    stack = make_stack(
        env={
            "PAYMENT_DEMO_LATENCY": "0.5",
            # Production's order of things: a step may run longer (soft limit 30 s) than the
            # soft-shutdown window (10 s); the stack's 4 s limit would end every step inside it.
            "CELERY_TASK_SOFT_TIME_LIMIT": "15",
            "CELERY_TASK_TIME_LIMIT": "17",
            "SMS_TIMEOUT": "15",
            # ...and a message lease (time limit + 5 s) below the retry cap, so a step that
            # finds one waits it out, as in production (65 s lease, 300 s cap).
            "TASK_RETRY_BACKOFF_MAX": "25",
            # The broker invariant of settings/celery.py: above the time limit plus the retry cap.
            "CELERY_VISIBILITY_TIMEOUT": "50",
        }
    )
    stack.start(workers=0)
    old = stack.start_worker(**PRODUCTION_WORKER_ENV)
    stack.sms.script(Reply(delay=HANGING_SMS_SECONDS))  # the gateway takes 12 s over the first SMS
    stack.smtp.slow_rcpt(SLOW_EMAIL_SECONDS, count=8)
    order_ids = stack.place_orders(payloads(product, ORDERS))

    wait_for(lambda: all(in_flight(order_ids)), timeout=60, interval=0.05, message="an SMS and an e-mail in flight")
    with ThreadPoolExecutor(1) as waiter:
        sent_off = time.monotonic()
        old.process.send_signal(signal.SIGTERM)  # the main process only, as an orchestrator does
        exited = waiter.submit(exit_time, old.process)
        stack.start_worker(**PRODUCTION_WORKER_ENV)  # the new release, started right away
        shutdown_seconds = exited.result() - sent_off

    stack.wait_until_final(order_ids, timeout=75)
    audit = stack.audit(order_ids)
    handed_back = WorkflowStep.objects.filter(order_id__in=order_ids, name="send_confirmation_sms", attempts__gt=1)
    log = old.log()
    window = log.partition("Initiating Soft Shutdown")[2].partition("Cold shutdown")[0]
    emails_finished = window.count("send_confirmation_email[")
    record(
        "11. graceful deploy (SIGTERM)",
        audit.figures(),
        faults=f"SIGTERM to the worker's main process with an e-mail ({SLOW_EMAIL_SECONDS} s SMTP) and an SMS "
        f"({HANGING_SMS_SECONDS} s gateway) in flight; a new worker started at once",
        notes=f"soft shutdown ({SOFT_SHUTDOWN:.0f} s window, REMAP_SIGTERM=SIGQUIT): {emails_finished} e-mail(s) "
        f"finished in the window, the SMS went back to the queue and its repeat was absorbed by the gateway's "
        f"Idempotency-Key; the old worker exited after {shutdown_seconds:.1f} s",
    )
    # A warm, soft shutdown, not a kill: running work finished, the rest handed back, bounded by the window.
    assert old.process.returncode == 0, log[-3000:]
    assert "Initiating Soft Shutdown" in log and "Restoring 1 unacknowledged message(s)" in log, log[-3000:]
    assert emails_finished >= 1, "no e-mail in flight finished during the soft-shutdown window"
    assert shutdown_seconds < SOFT_SHUTDOWN + 4 < HANGING_SMS_SECONDS - 2, f"shutdown took {shutdown_seconds:.1f}s"
    assert handed_back.count() == 1  # the SMS ran again on the new worker
    assert audit.confirmed == ORDERS, audit
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)
