"""The Celery app: `celery -A shop worker` and `celery -A shop beat` load it from here."""

import logging.config
import os

from celery import Celery, signals
from celery.concurrency import get_implementation
from celery.concurrency.prefork import TaskPool as PreforkPool
from django.conf import settings

from . import telemetry

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")


def _survive_broker_loss() -> None:
    """Keep a worker alive through a broker outage on Celery 5.7 with Redis.

    After a lost broker connection the consumer collects the connection, then closes it
    (celery/worker/consumer/consumer.py, on_connection_error_after_connected). The close
    reaches a Redis channel whose client the collect removed; handing its unacknowledged
    messages back raises AttributeError and the worker exits ("Unrecoverable error")
    instead of reconnecting: failure-injection scenario 3 found it. Such a channel cannot
    hand anything back; the messages stay in Redis's unacked index and the visibility
    timeout restores them.
    """
    from kombu.transport import redis as kombu_redis

    restore = kombu_redis.QoS.restore_unacked

    def restore_unacked(self, client=None):
        if client is None and self.channel.connection.client is None:
            return None
        return restore(self, client)

    kombu_redis.QoS.restore_unacked = restore_unacked


_survive_broker_loss()

# Every task inherits the retry policy and the revoke check (tasks_admin/base.py).
app = Celery("shop", task_cls="tasks_admin.base:RetryingTask")
# Every Celery setting lives in settings/celery.py as CELERY_<NAME>.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# Tracing (shop/telemetry.py), where each process may start it: a prefork pool process after the
# fork; a threads or solo worker, and beat, in their one process.
@signals.worker_process_init.connect(weak=False)
def _trace_pool_process(**kwargs) -> None:
    telemetry.start("worker")


@signals.worker_init.connect(weak=False)
def _trace_worker(sender=None, **kwargs) -> None:
    if not issubclass(get_implementation(sender.pool_cls), PreforkPool):
        telemetry.start("worker")


@signals.beat_init.connect(weak=False)
def _trace_beat(**kwargs) -> None:
    telemetry.start("beat")


def _log_as_django_does(loglevel=None, **kwargs) -> None:
    """LOG_FORMAT=json: workers and beat log through settings.LOGGING (one JSON object a line, with
    the task's fields: tasks_admin/logcontext.py) at the level of their --loglevel, instead of
    Celery's own format. Proven by tests/integration/test_json_logs.py."""
    logging.config.dictConfig(settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)


if settings.LOG_FORMAT == "json":
    signals.setup_logging.connect(_log_as_django_does, weak=False)
