"""A worker that cannot reach the database takes no tasks until it can again.

Every task of the shop reads or writes the database. A worker host cut off from it (a network
partition, a firewall, its connection pool exhausted) would go on taking messages, fail each one
after the connection timeout and retry it, perhaps to itself, until the task's retries ran out:
the other hosts, which reach the database, would not get those messages in time. So each worker
probes the database every DB_GUARD_SECONDS from a thread of its own and, once a probe fails, tells
itself through Celery's remote control (`cancel_consumer`, the public API an operator would use)
to stop consuming its queues; when a probe succeeds again, it consumes them again (`add_consumer`).
What it had already taken still runs, fails and is retried through the broker, where the other
workers take it (tests/reliability/test_failover.py, scenario 20). The control messages go
through the broker, so the consumer changes its queues on its own thread, as for an operator's
command. Off with DB_GUARD_SECONDS=0.
"""

import logging
import threading

from celery import bootsteps
from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection
from kombu.exceptions import OperationalError as BrokerError

logger = logging.getLogger(__name__)


def database_reachable() -> bool:
    """One round trip on this thread's own connection; a broken one is dropped for the next probe."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except (DatabaseError, InterfaceError):
        connection.close()
        return False


class DatabaseGuard(bootsteps.StartStopStep):
    """A consumer step (shop/celery.py adds it): the probe thread, and the queues it paused."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer, **kwargs) -> None:
        super().__init__(consumer, **kwargs)
        self.interval = settings.DB_GUARD_SECONDS
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def include_if(self, consumer) -> bool:
        return self.interval > 0

    def start(self, consumer) -> None:
        if self.thread is None:  # the consumer restarts its steps after a broker reconnect
            queues = [queue.name for queue in consumer.task_consumer.queues]
            args = (consumer.app, consumer.hostname, queues)
            self.thread = threading.Thread(target=self.watch, args=args, name="database-guard", daemon=True)
            self.thread.start()

    def shutdown(self, consumer) -> None:
        self.stopped.set()

    def watch(self, app, hostname: str, queues: list[str]) -> None:
        paused = False
        while not self.stopped.wait(self.interval):
            reachable = database_reachable()
            try:
                if paused and reachable:
                    for queue in queues:
                        app.control.add_consumer(queue, destination=[hostname])
                    logger.warning("The database is reachable again: consuming %s again", ", ".join(queues))
                elif not paused and not reachable:
                    for queue in queues:
                        app.control.cancel_consumer(queue, destination=[hostname])
                    logger.warning("The database is unreachable: no longer consuming %s", ", ".join(queues))
                else:
                    continue
                paused = not paused
            except BrokerError as exc:  # the broker is away too: try again on the next probe
                logger.warning("The database guard could not reach this worker through the broker: %s", exc)
        connection.close()
