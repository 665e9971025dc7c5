"""Celery base tasks: retries with backoff and jitter, and the step record on the order.

A workflow step task records on its WorkflowStep row when it starts, retries, succeeds
or fails. Start and success are written with the worker's next batch
(tasks_admin/writebehind.py): nothing waits for them, and a step run again does nothing
twice, as every service guards its effect with a business key. A retry or failure is
written at once, from inside the task, before Celery sends any error callback, so the
failure handler always sees which step failed and why.
"""

import logging
import random
from contextlib import suppress

from billiard.exceptions import WorkerLostError
from celery import Task, signals, states
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from django.utils import timezone

from shop.errors import TransientProviderError
from tasks_admin import writebehind

from .errors import NoFailedStep
from .models import WorkflowStep

logger = logging.getLogger(__name__)

# Errors worth retrying: a provider's transient failure, a database that is briefly
# unreachable, a call that ran past the soft time limit, a failure record still on its way.
TRANSIENT_ERRORS = (TransientProviderError, OperationalError, InterfaceError, SoftTimeLimitExceeded, NoFailedStep)


def retry_countdown(retries: int, retry_after: float | None = None) -> float:
    """Exponential backoff capped at TASK_RETRY_BACKOFF_MAX, with equal jitter.

    Half of the delay is fixed and half random, so retries of many tasks that failed
    together spread out instead of returning as one herd; a provider's Retry-After is
    honoured up to the cap.
    """
    cap = settings.TASK_RETRY_BACKOFF_MAX
    ceiling = min(cap, settings.TASK_RETRY_BACKOFF * 2**retries)
    countdown = ceiling / 2 + random.uniform(0, ceiling / 2)
    # The cap wins even over Retry-After: the broker's visibility timeout is sized on it.
    return min(max(countdown, retry_after or 0.0), cap)


class RetryingTask(Task):
    """Retries transient errors up to TASK_MAX_RETRIES times; any other error fails at once."""

    max_retries = settings.TASK_MAX_RETRIES
    default_retry_delay = settings.TASK_WORKER_LOST_RETRY_DELAY  # used by task_retry_on_worker_lost

    def __call__(self, *args, **kwargs):
        try:
            return self.attempt(*args, **kwargs)
        except TRANSIENT_ERRORS as exc:
            if self.request.retries < self.max_retries:
                countdown = retry_countdown(self.request.retries, getattr(exc, "retry_after", None))
                self.record_failure(args, exc, final=False)
                logger.warning("%s[%s] retry in %.1fs: %s", self.name, self.request.id, countdown, exc)
                raise self.retry(exc=exc, countdown=countdown) from exc
            self.record_failure(args, exc, final=True)
            raise
        except Exception as exc:
            self.record_failure(args, exc, final=True)
            raise

    def attempt(self, *args, **kwargs):
        return self.run(*args, **kwargs)

    def record_failure(self, args: tuple, exc: BaseException, *, final: bool) -> None:
        """Hook for subclasses: an attempt raised `exc`; `final` when no retry follows."""


class OrderTask(RetryingTask):
    """A task whose first argument is an order id (the task history links it to the order)."""

    order_argument = 0


_steps = writebehind.Table(
    "workflow step",
    lambda rows: writebehind.update_rows(WorkflowStep, ("order_id", "name"), rows, additive=("attempts",)),
    additive=("attempts",),
)


class WorkflowStepTask(OrderTask):
    """A step of the order workflow. Its name is the step's name; its one argument the order id."""

    # Nothing reads a step's result (the workflow's signatures are immutable): it is stored
    # with the worker's next batch (tasks_admin/backend.py).
    batch_result = True

    @property
    def step(self) -> str:
        return self.name.rpartition(".")[2]

    def attempt(self, order_id: str):
        key = (str(order_id), self.step)
        started = {"state": states.STARTED, "attempts": 1, "started_at": timezone.now(), "finished_at": None}
        if self.request.id:  # absent when the task's function is called directly
            started["task_id"] = self.request.id  # a staff retry runs the step under a new id
        _steps.put(key, **started)
        result = self.run(order_id)
        record = _steps.write_now if writebehind.run_again(self.request) else _steps.put
        record(key, state=states.SUCCESS, finished_at=timezone.now(), error="")
        return result

    def record_failure(self, args: tuple, exc: BaseException, *, final: bool) -> None:
        (order_id,) = args
        state = states.FAILURE if final else states.RETRY
        # Best effort: when the database itself is down, the retry still happens. After an
        # OperationalError the connection is dead and this write raises InterfaceError
        # ("connection already closed"), which is not a DatabaseError: escaping from here it
        # failed the task and stopped the order (failure-injection scenario 5).
        with suppress(DatabaseError, InterfaceError):
            _steps.write_now(
                (str(order_id), self.step),
                state=state,
                finished_at=timezone.now() if final else None,
                error=f"{type(exc).__name__}: {exc}",
            )


@signals.task_failure.connect(dispatch_uid="orders.record_lost_step")
def record_lost_step(sender=None, exception=None, args=None, **kwargs) -> None:
    """A pool process that died under a step (killed, hard time limit) never ran the step's
    own bookkeeping: the worker's main process reports the failure here instead."""
    if isinstance(sender, WorkflowStepTask) and isinstance(exception, WorkerLostError | TimeLimitExceeded):
        sender.record_failure(tuple(args or ()), exception, final=True)
