"""11. A deploy: SIGTERM to the running worker's main process, a new worker started at once.

The providers arrange the moment: the SMTP server holds an e-mail mid-conversation and the SMS
gateway holds an SMS, each until the test lets it go. At the SIGTERM the e-mail is let go (it
must finish inside the soft-shutdown window); the SMS only once the old worker has exited (so
it can only have been handed back, and must run again on the new worker).
"""

import re
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from orders.models import Order
from tasks_admin.models import TaskRecord

from .harness import Stack
from .scenarios import payloads, stock_up

ORDERS = 50
SOFT_SHUTDOWN = 5.0  # CELERY_SOFT_SHUTDOWN_TIMEOUT in the stack
EXIT_SLACK = 5.0  # for the old worker to hand back what still runs and exit after the window (about 2 s)
# The clients' own limits, far beyond the window: only the soft shutdown can end the held SMS.
PROVIDER_TIMEOUT = 20  # SMS_TIMEOUT and EMAIL_TIMEOUT
SOFT_TIME_LIMIT, TIME_LIMIT = 22, 25
# As in the Procfile: SIGTERM starts Celery's soft shutdown (a warm shutdown bounded by the
# window, then running tasks handed back). Without it SIGTERM waits for them however long.
PRODUCTION_WORKER_ENV = {"REMAP_SIGTERM": "SIGQUIT"}
RESTORED = re.compile(r"Restoring (\d+) unacknowledged message\(s\)")


def exit_time(process: subprocess.Popen) -> float:
    process.wait(timeout=60)
    return time.monotonic()


def message_task(order_ids: list[str], name: str, **customer: str) -> TaskRecord:
    """The task `name` of the order placed by the customer with these contact details."""
    order = Order.objects.get(pk__in=order_ids, **customer)
    return TaskRecord.objects.about(order).get(task_name=f"orders.tasks.{name}")


def test_a_deploy_lets_running_steps_finish_or_hands_them_back_and_loses_nothing(
    make_stack: Callable[..., Stack], record: Callable[..., None]
) -> None:
    """Every deploy stops workers mid-task: the stop must be bounded (below an orchestrator's kill
    timeout), and whatever it interrupts must come back and complete exactly once."""
    product = stock_up()
    stack = make_stack(
        env={
            "PAYMENT_DEMO_LATENCY": "0.5",
            # Production's order of things: the providers' timeouts and a step's time limits
            # (30 s soft) outlast the soft-shutdown window (10 s); the stack's 4 s limit would
            # end every step inside it.
            "SMS_TIMEOUT": str(PROVIDER_TIMEOUT),
            "EMAIL_TIMEOUT": str(PROVIDER_TIMEOUT),
            "CELERY_TASK_SOFT_TIME_LIMIT": str(SOFT_TIME_LIMIT),
            "CELERY_TASK_TIME_LIMIT": str(TIME_LIMIT),
            # ...and a message lease (time limit + 5 s) within the retry cap, so a step that
            # finds one waits it out, as in production (65 s lease, 300 s cap).
            "TASK_RETRY_BACKOFF_MAX": str(TIME_LIMIT + 5),
            # The broker invariant of settings/celery.py: above the time limit plus the retry cap.
            "CELERY_VISIBILITY_TIMEOUT": str(3 * TIME_LIMIT),
        }
    )
    stack.start(workers=0)
    # Two processes: one for the held e-mail, one for the held SMS.
    old = stack.start_worker("--concurrency", "2", **PRODUCTION_WORKER_ENV)
    email = stack.smtp.hold_next()
    order_ids = stack.place_orders(payloads(product, ORDERS))
    email.wait(timeout=60, what="an e-mail held at the SMTP server")
    sms = stack.sms.hold_next()  # asked for only now: the SMS arrives just before the SIGTERM
    sms.wait(timeout=60, what="an SMS held at the gateway")

    # The premise, on the clients' clocks: the e-mail's client still waits for its reply to the
    # end of the window, and the SMS's would wait beyond the old worker's exit.
    email_held, sms_held = email.held_for(), sms.held_for()
    assert email_held + SOFT_SHUTDOWN < PROVIDER_TIMEOUT, f"the e-mail was held {email_held:.1f}s before the SIGTERM"
    assert sms_held + SOFT_SHUTDOWN + EXIT_SLACK < PROVIDER_TIMEOUT, f"the SMS was held {sms_held:.1f}s already"
    with ThreadPoolExecutor(1) as waiter:
        sent_off = time.monotonic()
        old.process.send_signal(signal.SIGTERM)  # the main process only, as an orchestrator does
        exited = waiter.submit(exit_time, old.process)
        email.release()  # it finishes inside the window
        new = stack.start_worker(**PRODUCTION_WORKER_ENV)  # the new release, started right away
        shutdown_seconds = exited.result() - sent_off
    sms.release()  # to a client that is gone: the gateway delivers it all the same

    stack.wait_until_final(order_ids, timeout=120)
    audit = stack.audit(order_ids)
    email_step = message_task(order_ids, "send_confirmation_email", email=email.to)
    sms_step = message_task(order_ids, "send_confirmation_sms", phone=sms.to)
    log = old.log()
    window = log.partition("Initiating Soft Shutdown")[2].partition("Cold shutdown")[0]
    restored = sum(int(n) for n in RESTORED.findall(log))
    record(
        "11. graceful deploy (SIGTERM)",
        audit.figures(),
        faults=f"SIGTERM to the worker's main process with an e-mail in flight (held at RCPT by the SMTP server for "
        f"{email_held:.1f} s, let go at the SIGTERM) and an SMS (held by the gateway {sms_held:.1f} s before the "
        "SIGTERM, until the old worker had exited); a new worker started at once",
        notes=f"soft shutdown ({SOFT_SHUTDOWN:.0f} s window, REMAP_SIGTERM=SIGQUIT): the e-mail finished in the "
        f"window; the SMS went back to the queue ({restored} message(s) restored), ran again on the new worker and "
        f"its repeat was absorbed by the gateway's Idempotency-Key; the old worker exited after "
        f"{shutdown_seconds:.1f} s",
    )
    # A warm, soft shutdown, not a kill: running work finished, the rest handed back, bounded by the window.
    assert old.process.returncode == 0, log[-3000:]
    assert "Initiating Soft Shutdown" in log, log[-3000:]
    assert f"send_confirmation_email[{email_step.task_id}] succeeded" in window, window[-3000:]
    assert restored >= 1, log[-3000:]
    assert shutdown_seconds < SOFT_SHUTDOWN + EXIT_SLACK, f"shutdown took {shutdown_seconds:.1f}s"
    # The SMS ran again on the new worker, and its customer got it once.
    assert f"send_confirmation_sms[{sms_step.task_id}] succeeded" in new.log(), new.log()[-3000:]
    assert len(stack.sms.delivered(to=sms.to)) == 1
    assert any(request.repeat for request in stack.sms.received(to=sms.to))
    assert audit.confirmed == ORDERS, audit
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)
