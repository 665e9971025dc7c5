"""The Celery app: `celery -A shop worker` and `celery -A shop beat` load it from here."""

import logging.config
import os

from celery import Celery, signals
from celery.concurrency import get_implementation
from celery.concurrency.prefork import TaskPool as PreforkPool
from django.conf import settings

from tasks_admin import billiard_fixes, celery_fixes, kombu_fixes
from tasks_admin.database_guard import DatabaseGuard

from . import telemetry

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")


# A kombu bug the workers hit on a lost Redis connection, fixed on the versions that have it.
kombu_fixes.apply()
# A soft time limit signalled late lands outside the task it was for; dropped there, on the billiard
# versions that raise it anyway.
billiard_fixes.apply()

# Every task inherits the retry policy and the revoke check (tasks_admin/base.py).
app = Celery("shop", task_cls="tasks_admin.base:RetryingTask")
# Every Celery setting lives in settings/celery.py as CELERY_<NAME>; Celery gets those alone, as a
# dict, not Django's whole settings object. Celery reads its settings on every send and every task
# (app.conf.<name>): through Django's lazy settings each read of a setting left at its default took
# 13 µs (two failed attribute lookups, each raising), 4.7 µs from a dict; and Django's other
# settings (SECRET_KEY among them) stay out of Celery's configuration and `celery inspect conf`
# (celery/celery#5024). Proven by tests/unit/test_celery_app.py; the figures in docs/benchmarks.md.
app.config_from_object(
    {name: getattr(settings, name) for name in dir(settings) if name.startswith("CELERY_")}, namespace="CELERY"
)
app.autodiscover_tasks()
# A worker that cannot reach the database stops taking tasks until it can (DB_GUARD_SECONDS).
app.steps["consumer"].add(DatabaseGuard)


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
    # Its shutdown notices too, which Celery writes outside logging (celery/celery#8101).
    celery_fixes.notices_as_json()
