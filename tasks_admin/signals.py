"""What the task layer does around every task, in the order it happens: the one place that
connects Celery's signals (tasks_admin.apps.TasksAdminConfig.ready imports it, in web, worker
and beat alike). Receivers run in the order they are connected below.

    publish      logcontext.carry                the log context (request id, order number) goes along
                 history.record_published       the task's record: queued (or a planned one sent on)
    worker up    history.restore_revoked         revokes made while the worker was away
                 gcfreeze.freeze_start_up_objects  ... and its start-up objects left out of the GC
    pool process gcfreeze.freeze_start_up_objects  the same in each prefork pool process, after the fork
    prerun       billiard_fixes.task_started     the soft time limit may interrupt this process now
                 logcontext.bind_task            the log context: task id and name, what was carried
                 writebehind.start_batching      from the process's first task, bookkeeping in batches
                 backend.set_write_deadline      result writes wait for the database only so long
                 history.record_started          started, on which worker (batched)
    (the task)   base.RetryingTask.__call__      skips a revoked task; retries transient errors
    retry        history.record_retry            the error that will be retried
    failure      history.record_failure          failed, and whether it is a dead letter
                 record_lost_run                 a run whose pool process died: its task's own hook
    revoked      history.record_revoked          revoked, terminated or expired
    postrun      history.record_finished         its end and runtime (batched when it succeeded)
                 backend.forget_write_deadline
                 close_old_connections           Django's end-of-request connection hygiene
                 logcontext.clear                nothing of this task in the process's next log lines
                 billiard_fixes.task_ended       ... and no longer (a late one is dropped)
    exit         writebehind.flush_on_exit       the last batch, from a pool process or the worker
"""

from billiard.exceptions import WorkerLostError
from celery import signals
from celery.exceptions import TimeLimitExceeded
from django.db import connections

from . import backend, billiard_fixes, gcfreeze, history, logcontext, writebehind
from .base import RetryingTask


def record_lost_run(sender=None, exception=None, args=None, **kwargs) -> None:
    """A pool process that died under a task (killed, hard time limit) never ran the task's own
    failure bookkeeping: the worker's main process calls it here instead."""
    if isinstance(sender, RetryingTask) and isinstance(exception, WorkerLostError | TimeLimitExceeded):
        sender.record_failure(tuple(args or ()), exception, final=True)


def close_old_connections(**kwargs) -> None:
    """After each task, what Django does after each request: drop connections that are past
    CONN_MAX_AGE or raised an error (settings/celery.py: CELERY_DB_REUSE_MAX keeps the rest
    open). Unlike a request, no health check (a SELECT 1, 5% of a worker's time in the
    benchmark's profile) runs before the next task's first query: a connection that broke
    meanwhile fails that query, and the task retries it as any database error."""
    for connection in connections.all(initialized_only=True):
        connection.close_if_unusable_or_obsolete()
        connection.health_check_done = True


def _connect(signal, *receivers) -> None:
    for receiver in receivers:
        signal.connect(receiver, weak=False, dispatch_uid=f"tasks_admin.{receiver.__module__}.{receiver.__name__}")


_connect(signals.before_task_publish, logcontext.carry, history.record_published)
_connect(signals.worker_ready, history.restore_revoked, gcfreeze.freeze_start_up_objects)
_connect(signals.worker_process_init, gcfreeze.freeze_start_up_objects)
_connect(
    signals.task_prerun,
    billiard_fixes.task_started,
    logcontext.bind_task,
    writebehind.start_batching,
    backend.set_write_deadline,
    history.record_started,
)
_connect(signals.task_retry, history.record_retry)
_connect(signals.task_failure, history.record_failure, record_lost_run)
_connect(signals.task_revoked, history.record_revoked)
_connect(
    signals.task_postrun,
    history.record_finished,
    backend.forget_write_deadline,
    close_old_connections,
    logcontext.clear,
    billiard_fixes.task_ended,
)
_connect(signals.worker_process_shutdown, writebehind.flush_on_exit)
_connect(signals.worker_shutdown, writebehind.flush_on_exit)
