"""Quorum queues (CELERY_BROKER_QUEUE_TYPE=quorum, settings/celery.py): a retry's countdown waits
in RabbitMQ's delay queues (Celery's native delayed delivery), not in a worker, so a worker
SIGKILLed while a retry waits loses nothing, and the retry runs once, after its countdown.

The workflow tests run on quorum queues in CI too (.ci/run), and scenario 15 kills the worker
mid-step on them (test_rabbitmq.py).
"""

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.tasks import runs
from tests.processes import ROOT
from tests.support import wait_for

from .harness import Stack
from .rabbitmq import private_vhost, queue_depths

QUORUM = {"CELERY_BROKER_QUEUE_TYPE": "quorum"}
COUNTDOWN = 6.5  # sent as 7 s: native delayed delivery counts whole seconds (tasks_admin/base.py)
RETRIES = 2  # the second retry passes the same delay queue again: RabbitMQ 3.10's cycle detection
MANY_RETRIES = 5


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    with private_vhost("quorum") as url:
        yield url


def call(stack: Stack, tag: str, countdown: float, retries: int) -> None:
    """Send the task from a process of its own, configured like the shop's web (quorum queues)."""
    arguments = [tag, countdown, retries]
    code = f"from tests.fakes.tasks import retry_with_countdown; retry_with_countdown.delay(*{arguments!r})"
    argv = [sys.executable, "manage.py", "shell", "-c", code]
    sent = subprocess.run(argv, env=stack.env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr


def waiting_in_the_broker(broker_url: str) -> dict[str, tuple[int, int]] | None:
    """The delay queues holding a message while no task queue has one out to a worker, or None."""
    depths = queue_depths(broker_url)
    delayed = {name: d for name, d in depths.items() if name.startswith("celery_delayed_") and d[0]}
    held = any(unacked for name, (_, unacked) in depths.items() if not name.startswith("celery_delayed_"))
    return delayed if delayed and not held else None


def drained(broker_url: str) -> bool:
    return not any(ready or unacked for ready, unacked in queue_depths(broker_url).values())


def gaps(tag: str, directory: Path) -> list[float]:
    times = [at for _, at in runs(tag, directory)]
    return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


# rabbitmq_url comes first: its vhost is deleted only after the stack has stopped.
def test_a_retry_waits_in_the_broker_and_runs_once_after_its_countdown_though_the_worker_is_killed(
    rabbitmq_url: str, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(broker_url=rabbitmq_url, env=QUORUM).start(workers=1, web=False)
    tag = uuid.uuid4().hex[:8]
    call(stack, tag, COUNTDOWN, RETRIES)

    for attempt in range(RETRIES):
        wait_for(lambda n=attempt + 1: len(runs(tag, stack.fault_dir)) == n, timeout=60, message=f"run {attempt + 1}")
        wait_for(lambda: waiting_in_the_broker(rabbitmq_url), timeout=COUNTDOWN - 2, message="a retry in a delay queue")
        stack.kill_worker(stack.workers[0])  # SIGKILL while the retry waits
        stack.start_worker()

    wait_for(lambda: len(runs(tag, stack.fault_dir)) == RETRIES + 1, timeout=60, message="the last retry")
    wait_for(lambda: drained(rabbitmq_url), timeout=30, message="every queue empty: nothing more can be delivered")
    assert [retries for retries, _ in runs(tag, stack.fault_dir)] == list(range(RETRIES + 1))
    assert all(gap >= COUNTDOWN for gap in gaps(tag, stack.fault_dir)), gaps(tag, stack.fault_dir)


def test_retries_under_a_second_wait_a_whole_second_each_instead_of_failing(
    rabbitmq_url: str, make_stack: Callable[..., Stack]
) -> None:
    """Celery refuses a native delayed countdown under 1 s (kombu: "countdown must be a positive
    number"); the shop's retries start at fractions of a second (TASK_RETRY_BACKOFF). Five retries
    in a row: each republished routing key once kept the previous delay prefix and grew past AMQP's
    255 bytes around the fifth, and the task was stuck (celery#10111, fixed in kombu 5.7)."""
    stack = make_stack(broker_url=rabbitmq_url, env=QUORUM).start(workers=1, web=False)
    tag = uuid.uuid4().hex[:8]
    started = time.time()
    call(stack, tag, 0.3, MANY_RETRIES)

    wait_for(
        lambda: len(runs(tag, stack.fault_dir)) == MANY_RETRIES + 1, timeout=90, message=f"the retries\n{stack.logs()}"
    )
    assert runs(tag, stack.fault_dir)[0][1] >= started
    assert all(gap >= 1.0 for gap in gaps(tag, stack.fault_dir)), gaps(tag, stack.fault_dir)
