"""12. Scenario 1 on RabbitMQ: a worker killed with SIGKILL in the middle of each kind of step.

Classic durable queues (settings/celery.py): RabbitMQ hands a dead consumer's unacknowledged
messages to another at once, where Redis waits for the visibility timeout.
"""

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.support import require

from .harness import Stack
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


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)


def rabbitmq_version() -> str:
    return rabbitmqctl("version").stdout.strip()


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    """A fresh vhost for this run, deleted afterwards: no queue or message of another run can interfere."""
    require(shutil.which("rabbitmqctl") is not None, "RabbitMQ is not installed")
    vhost = f"reliability-{uuid.uuid4().hex[:8]}"
    added = rabbitmqctl("add_vhost", vhost)
    require(added.returncode == 0, f"RabbitMQ is not running: {added.stderr.strip()}")
    try:
        assert rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*").returncode == 0
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


# rabbitmq_url comes first: its vhost is deleted only after the stack has stopped.
def test_on_rabbitmq_every_order_confirms_once_when_the_worker_is_killed_mid_step(
    rabbitmq_url: str, make_stack: Callable[..., Stack], record: Callable[..., None]
) -> None:
    """The shop supports RabbitMQ: its redelivery (no visibility timeout) must give the same
    guarantees as Redis when a worker dies mid-step."""
    stack = make_stack(broker_url=rabbitmq_url, env=PAUSE_ENV)
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
        "12. RabbitMQ: worker SIGKILL mid-step",
        audit.figures(),
        faults=f"{len(hit)} SIGKILLs of the whole worker, mid-step: " + "; ".join(hit),
        notes=f"RabbitMQ {rabbitmq_version()}, classic durable queues: a killed worker's unacknowledged "
        f"messages went to the next worker at once (no visibility timeout); every order final "
        f"{settled:.1f} s after the last kill; the recovery job settled {settled_step_records(stack)} step records "
        "the killed processes had not written yet",
    )
    assert audit.confirmed == ORDERS, audit
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)
