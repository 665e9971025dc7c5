"""The machine's RabbitMQ for the scenarios: a private vhost per test, and what its queues hold."""

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support import require


def rabbitmqctl(*args: str, node: str | None = None) -> subprocess.CompletedProcess:
    argv = ["rabbitmqctl", "-q", *(("-n", node) if node else ()), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def rabbitmq_version() -> str:
    return rabbitmqctl("version").stdout.strip()


@contextmanager
def private_vhost(prefix: str = "reliability") -> Iterator[str]:
    """A fresh vhost on the local RabbitMQ, deleted afterwards: no queue or message of another run
    (nor a queue of the other type under the same name) can interfere. Yields its broker URL."""
    require(shutil.which("rabbitmqctl") is not None, "RabbitMQ is not installed")
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    added = rabbitmqctl("add_vhost", vhost)
    require(added.returncode == 0, f"RabbitMQ is not running: {added.stderr.strip()}")
    try:
        assert rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*").returncode == 0
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


def queue_depths(broker_url: str) -> dict[str, tuple[int, int]]:
    """{queue: (ready, unacknowledged)} in the broker URL's vhost, as RabbitMQ counts them."""
    vhost = broker_url.rpartition("/")[2]
    listed = rabbitmqctl("list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged")
    rows = (line.split("\t") for line in listed.stdout.splitlines()[1:] if line.strip())
    return {name: (int(ready), int(unacked)) for name, ready, unacked in rows}
