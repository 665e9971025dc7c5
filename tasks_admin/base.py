"""The project's default task class (shop/celery.py): retries with backoff and jitter, and no run
of a task that staff revoked.

Every task of every app inherits this; an app raises `TransientError` (or a subclass) for what is
worth another try and anything else for what is not.
"""

import logging
import math
import random

from celery import Task
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from celery.utils.quorum_queues import detect_quorum_queues
from django.conf import settings
from django.db import InterfaceError, OperationalError

from . import history
from .errors import TransientError

logger = logging.getLogger(__name__)


# A database briefly unreachable, a call cut short by the soft time limit: tried again too.
TRANSIENT_ERRORS = (TransientError, OperationalError, InterfaceError, SoftTimeLimitExceeded)


def retry_countdown(retries: int, retry_after: float | None = None) -> float:
    """Exponential backoff capped at TASK_RETRY_BACKOFF_MAX, with equal jitter.

    Half of the delay is fixed and half random, so retries of many tasks that failed
    together spread out instead of returning as one herd; a provider's Retry-After is
    honoured up to the cap (tests/unit/test_steps.py).
    """
    cap = settings.TASK_RETRY_BACKOFF_MAX
    ceiling = min(cap, settings.TASK_RETRY_BACKOFF * 2**retries)
    countdown = ceiling / 2 + random.uniform(0, ceiling / 2)
    # The cap wins even over Retry-After: the broker's visibility timeout is sized on it.
    return min(max(countdown, retry_after or 0.0), cap)


def uses_native_delayed_delivery(app) -> bool:
    """Whether countdowns go through RabbitMQ's delay queues: Celery does so when a queue is a
    quorum queue on an AMQP broker (settings/celery.py, CELERY_BROKER_QUEUE_TYPE=quorum)."""
    with app.connection_for_write() as connection:
        return detect_quorum_queues(app, connection.transport.driver_type)[0]


def whole_seconds(countdown: float) -> int:
    """A countdown for native delayed delivery, whose unit is the second: Celery truncates a
    countdown to whole seconds and refuses one under a second (ValueError), so a 0.5 s retry
    would fail instead of waiting. Rounded up, a retry never comes back sooner than asked
    (tests/unit/test_steps.py, tests/reliability/test_quorum_queues.py)."""
    return max(1, math.ceil(countdown))


class RetryingTask(Task):
    """Retries transient errors up to TASK_MAX_RETRIES times; any other error fails at once.

    A task staff revoked does not run, even on a worker that did not hear the revoke (it was
    paused, or started later): the history says so (tests/integration/test_order_safety.py).
    That costs a query before every run; a task class whose owner only lets staff revoke it by
    first changing what its run checks (orders/steps.py: the order's state) sets
    `check_revoked = False`, and the history still marks such a refused run revoked.
    """

    max_retries = settings.TASK_MAX_RETRIES
    check_revoked = True
    default_retry_delay = settings.TASK_WORKER_LOST_RETRY_DELAY  # used by task_retry_on_worker_lost

    def __call__(self, *args, **kwargs):
        try:
            # A database error here is retried too.
            if self.check_revoked and self.request.id and history.is_revoked(self.request.id):
                logger.warning("%s[%s] was revoked: not running it", self.name, self.request.id)
                raise Ignore(history.REVOKED_BY_STAFF)
            return self.attempt(*args, **kwargs)
        except TRANSIENT_ERRORS as exc:
            if self.request.retries < self.max_retries:
                countdown = retry_countdown(self.request.retries, getattr(exc, "retry_after", None))
                self.record_failure(args, exc, final=False)
                logger.warning("%s[%s] retry in %.1fs: %s", self.name, self.request.id, countdown, exc)
                raise self.retry(exc=exc, countdown=countdown) from exc
            self.record_failure(args, exc, final=True)
            raise
        except Ignore:
            raise
        except Exception as exc:
            self.record_failure(args, exc, final=True)
            raise

    def apply_async(self, args=None, kwargs=None, task_id=None, producer=None, link=None, link_error=None, **options):
        """Every send of the task (a retry, the worker-lost retry, a canvas) passes here: a countdown
        becomes whole seconds where native delayed delivery carries it."""
        countdown = options.get("countdown")
        if countdown and 0 < countdown != int(countdown) and uses_native_delayed_delivery(self.app):
            options["countdown"] = whole_seconds(countdown)
        return super().apply_async(args, kwargs, task_id, producer, link, link_error, **options)

    def attempt(self, *args, **kwargs):
        return self.run(*args, **kwargs)

    def record_failure(self, args: tuple, exc: BaseException, *, final: bool) -> None:
        """Hook for subclasses: an attempt raised `exc`; `final` when no retry follows. Also called
        by the worker's main process for a run whose pool process died under it (killed, hard time
        limit): that run never got to call it itself (tasks_admin/signals.py)."""
