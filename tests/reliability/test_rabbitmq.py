"""12 and 14. Scenario 1 on RabbitMQ: a worker killed with SIGKILL in the middle of each kind of
step, on classic durable queues and on quorum queues (CELERY_BROKER_QUEUE_TYPE, settings/celery.py).

RabbitMQ hands a dead consumer's unacknowledged messages to another at once, where Redis waits
for the visibility timeout. On quorum queues a retry's countdown (the worker-lost retry included)
waits in the broker's delay queues rather than in the killed worker.
"""

import time
from collections.abc import Callable, Iterator

import pytest

from .harness import Stack
from .rabbitmq import private_vhost, rabbitmq_version
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
SCENARIOS = {
    "classic": ("12. RabbitMQ: worker SIGKILL mid-step", "classic durable queues"),
    "quorum": (
        "15. RabbitMQ quorum queues: worker SIGKILL mid-step",
        "quorum queues, countdowns in the broker's delay queues (native delayed delivery)",
    ),
}

# The first payment pauses as soon as the first checkout is dispatched, and the kills start once
# all 50 are placed: on a loaded machine that took longer than the stack's 4 s soft time limit,
# which then cut the pause short (premise failed). The limits only bound how long a pause can wait.
PATIENT_PAUSES = {"CELERY_TASK_SOFT_TIME_LIMIT": "30", "CELERY_TASK_TIME_LIMIT": "35"}


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    with private_vhost() as url:
        yield url


# rabbitmq_url comes first: its vhost is deleted only after the stack has stopped.
@pytest.mark.parametrize("queue_type", SCENARIOS)
def test_on_rabbitmq_every_order_confirms_once_when_the_worker_is_killed_mid_step(
    rabbitmq_url: str, make_stack: Callable[..., Stack], record: Callable[..., None], queue_type: str
) -> None:
    """The shop supports RabbitMQ: its redelivery (no visibility timeout) must give the same
    guarantees as Redis when a worker dies mid-step, on either queue type."""
    scenario, queues = SCENARIOS[queue_type]
    stack = make_stack(
        broker_url=rabbitmq_url, env={**PAUSE_ENV, **PATIENT_PAUSES, "CELERY_BROKER_QUEUE_TYPE": queue_type}
    )
    stack.start(workers=0)
    run_recovery(stack)
    order_ids = stack.place_orders(payloads(stock_up(), ORDERS))
    # The worker starts only now: a step pauses (4 s to its time limit) once the kill loop watches,
    # however long placing the orders took on a busy machine.
    stack.start_worker(*ONE_TASK_AT_A_TIME)

    hit, last_kill = kill_worker_mid_each_step(stack)

    stack.wait_until_final(order_ids, timeout=120)
    settled = time.monotonic() - last_kill
    audit = stack.audit(order_ids)
    record(
        scenario,
        audit.figures(),
        faults=f"{len(hit)} SIGKILLs of the whole worker, mid-step: " + "; ".join(hit),
        notes=f"RabbitMQ {rabbitmq_version()}, {queues}: a killed worker's unacknowledged "
        f"messages went to the next worker at once (no visibility timeout); every order final "
        f"{settled:.1f} s after the last kill; the recovery job settled {settled_step_records(stack)} step records "
        "the killed processes had not written yet",
    )
    assert audit.confirmed == ORDERS, audit
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)
