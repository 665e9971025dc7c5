"""Task history: each task is recorded when it is published and followed in the worker.

Its signal handlers are connected by tasks_admin/signals.py, in every process that loads Django
(web, worker, beat): publishing inserts a TaskRecord (state PENDING: queued) — unless the sender recorded the
task already, as the checkout does for a whole order workflow (RECORDED_HEADER); the
worker marks it started and finished in batches (tasks_admin/writebehind.py), failed,
retried or revoked at once. Recording is best effort: a database error is logged and
never stops a task from being sent or run.
"""

import functools
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import current_app, states
from celery.worker import state as worker_state
from django.db import DatabaseError, connection, transaction
from django.db.models import Model, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from kombu.utils.json import dumps as kombu_dumps
from kombu.utils.json import loads as kombu_loads

from . import subjects, writebehind
from .models import PLANNED, SKIPPED, TaskAction, TaskRecord

logger = logging.getLogger(__name__)

RETRY_OF_HEADER = "shop_retry_of"
# Set on a task whose TaskRecord its sender wrote already (orders/workflow.py): publishing it
# writes nothing, or only marks a waiting task queued.
RECORDED_HEADER = "shop_recorded"
# Why a revoked task that reached a worker anyway did not run (tasks_admin/base.py).
REVOKED_BY_STAFF = "revoked by staff before it ran"

_started: dict[str, float] = {}  # task id → monotonic start, in the process running it


def encode_arguments(value: Any) -> Any:
    """Arguments as Celery's JSON serializer writes them (Decimal, datetime, UUID keep type markers)."""
    return json.loads(kombu_dumps(value))


def decode_arguments(value: Any) -> Any:
    """The Python arguments back from `encode_arguments`, exactly."""
    return kombu_loads(json.dumps(value))


def _best_effort(write) -> None:
    try:
        if connection.in_atomic_block:
            with transaction.atomic():  # a savepoint: a failed write leaves the caller's transaction usable
                write()
        else:
            write()
    except DatabaseError:
        logger.warning("Could not record task history", exc_info=True)


def _datetime(value: str | datetime | None) -> datetime | None:
    if not value or isinstance(value, datetime):
        return value or None
    return parse_datetime(value)


@dataclass(frozen=True)
class PlannedTask:
    """A task of a canvas, recorded by its sender before the canvas is sent."""

    task_id: str
    task_name: str
    args: list
    subject: Model | None  # what the task is about (tasks_admin/subjects.py)
    root_id: str
    parent_id: str
    chord_id: str
    first: bool = False  # sent with the canvas itself; the others wait for the tasks before them


def record_planned(tasks: Iterable[PlannedTask]) -> None:
    """Record a canvas's tasks in the caller's transaction, with the routing they will be sent
    with: the first as queued, the rest as waiting until a worker sends them on. Send them with
    RECORDED_HEADER: publishing the first then writes nothing, and publishing a waiting one
    only marks it queued, in the sender's next batch."""
    now = timezone.now()
    records = []
    for task in tasks:
        queue, exchange, routing_key = _route(task.task_name)
        records.append(
            TaskRecord(
                task_id=task.task_id,
                task_name=task.task_name,
                state=states.PENDING if task.first else PLANNED,
                args=encode_arguments(task.args),
                kwargs={},
                queue=queue,
                exchange=exchange,
                routing_key=routing_key,
                root_id=task.root_id,
                parent_id=task.parent_id,
                chord_id=task.chord_id,
                sent_at=now,
                **subjects.of_object(task.subject),
            )
        )
    TaskRecord.objects.bulk_create(records)


def skip(task_ids: Iterable[str], reason: str) -> int:
    """Mark tasks that have not started and now will not run (their workflow stopped, or a new
    run replaced them) as not run, saying why; return how many. A task among them that is in
    the broker already and reaches a worker anyway is ignored by its owner's own guard."""
    return TaskRecord.objects.filter(task_id__in=list(task_ids), state__in=(PLANNED, states.PENDING)).update(
        state=SKIPPED, exception_message=reason[:2000], finished_at=timezone.now()
    )


def unstarted(subject: Model, task_names: Iterable[str]) -> list[str]:
    """Ids of the tasks of these names about `subject` (an order's workflow) that are waiting or queued."""
    waiting = TaskRecord.objects.about(subject).filter(
        task_name__in=list(task_names), state__in=(PLANNED, states.PENDING)
    )
    return list(waiting.values_list("task_id", flat=True))


def settle(task_ids, state: str, note: str) -> int:
    """Record how runs ended whose own record of it was lost (their worker process was killed
    before its batch was written): `task_ids` is a list or a subquery; return how many changed."""
    live = (PLANNED, states.PENDING, states.STARTED, states.RETRY)
    return TaskRecord.objects.filter(task_id__in=task_ids, state__in=live).update(
        state=state, exception_message=note, finished_at=timezone.now()
    )


def is_revoked(task_id: str) -> bool:
    """Whether staff revoked this task (tasks_admin/base.py checks it before every run)."""
    return TaskRecord.objects.filter(task_id=task_id, state=states.REVOKED).exists()


def was_revoked(task_id: str) -> bool:
    """Whether staff revoked this task, even if a batch of its run's start overwrote the state
    since: the console's audit of the revoke stays (tasks_admin/services.py: revoke)."""
    revoked = Q(state=states.REVOKED) | Q(actions__kind=TaskAction.Kind.REVOKE)
    return TaskRecord.objects.filter(revoked, task_id=task_id).exists()


@functools.cache
def _route(task_name: str) -> tuple[str, str, str]:
    """The queue, exchange and routing key Celery sends `task_name` with (the routes are settings)."""
    queue = current_app.amqp.router.route({}, task_name)["queue"]
    return queue.name, queue.exchange.name if queue.exchange else "", queue.routing_key or ""


def forget_planned(task_ids: Iterable[str]) -> None:
    """Remove the records of planned tasks that could not be sent after all (broker down):
    whoever sends them later records them then."""
    unsent = TaskRecord.objects.filter(task_id__in=list(task_ids), state__in=(PLANNED, states.PENDING))
    _best_effort(lambda: unsent.delete())


def record_published(sender: str, body, exchange: str, routing_key: str, headers: dict, properties: dict, **kw):
    if not isinstance(body, (list, tuple)) or len(body) != 3:
        return  # task message protocol 1: not used by this project
    args, kwargs, embed = body
    task_id, retries = headers["id"], headers.get("retries") or 0
    if headers.get(RECORDED_HEADER) and not retries:
        # Its sender recorded the first task of a canvas as queued (record_planned): nothing to
        # add (test_checkout.py::test_sending_the_workflow_writes_nothing_more_to_the_task_history).
        if headers.get("root_id") != task_id:
            _published.put(task_id, state=states.PENDING, sent_at=timezone.now())
        return
    declare = kw.get("declare") or []
    queue = declare[0].name if declare else routing_key
    eta = _datetime(headers.get("eta"))

    def write() -> None:
        if retries:  # a retry re-publishes the same task id
            _runs.write_now(task_id, state=states.RETRY, retries=retries, eta=eta)
            _count_runs_at_least(task_id, retries)
            return
        retry_of = headers.get(RETRY_OF_HEADER)
        record = TaskRecord(
            task_id=task_id,
            task_name=sender,
            args=encode_arguments(list(args)),
            kwargs=encode_arguments(kwargs),
            queue=queue or "",
            exchange=exchange or "",
            routing_key=routing_key or "",
            priority=properties.get("priority"),
            root_id=headers.get("root_id") or "",
            parent_id=headers.get("parent_id") or "",
            group_id=headers.get("group") or "",
            chord_id=((embed or {}).get("chord") or {}).get("options", {}).get("task_id") or "",
            eta=eta,
            expires=_datetime(headers.get("expires")),
            **subjects.of_task(sender, args),
            periodic_task_name=headers.get("periodic_task_name") or "",
            retry_of_id=TaskRecord.objects.filter(task_id=retry_of).values_list("pk", flat=True).first()
            if retry_of
            else None,
            sent_at=timezone.now(),
        )
        TaskRecord.objects.bulk_create([record], ignore_conflicts=True)

    _best_effort(write)


def _write_runs(rows: dict) -> None:
    """The batched start and finish of runs; a task no process recorded when it was sent
    (another app, a shell) gets its record now."""
    fields = {task_id: {k: v for k, v in row.items() if k != "insert"} for task_id, row in rows.items()}
    if writebehind.update_rows(TaskRecord, ("task_id",), fields, additive=("attempts",)) == len(rows):
        return
    known = set(TaskRecord.objects.filter(task_id__in=list(rows)).values_list("task_id", flat=True))
    missing = [
        TaskRecord(task_id=task_id, **{**_unsent(*row["insert"]), **fields[task_id]})
        for task_id, row in rows.items()
        if task_id not in known and "insert" in row
    ]
    TaskRecord.objects.bulk_create(missing, ignore_conflicts=True)


def _unsent(name: str, args, kwargs, request, at) -> dict:
    """The record of a task sent by a process that does not record, from its run's request."""
    return {
        "task_name": name,
        "args": encode_arguments(list(args or ())),
        "kwargs": encode_arguments(kwargs or {}),
        "queue": (request.delivery_info or {}).get("routing_key") or "",
        "root_id": request.root_id or "",
        "parent_id": request.parent_id or "",
        "group_id": request.group or "",
        **subjects.of_task(name, tuple(args or ())),
        "sent_at": at,
    }


_runs = writebehind.Table("task history", _write_runs, additive=("attempts",), rows_of=(TaskRecord, "task_id"))
# Planned tasks a worker has sent on: queued now, unless they already started (another process
# may have written that first) or were skipped.
_published = writebehind.Table(
    "sent planned task",
    lambda rows: writebehind.update_rows(TaskRecord, ("task_id",), rows, only_if={"state": PLANNED}),
    rows_of=(TaskRecord, "task_id"),
)


def record_started(task_id: str, task, args, kwargs, **kw) -> None:
    _started[task_id] = time.monotonic()
    request = task.request
    now = timezone.now()
    group = {"group_id": request.group} if request.group else {}  # a chord's, known once sent
    # A run again (redelivered after it ended, say) is counted again when it ends (tally.py).
    again = {"tallied": False} if writebehind.run_again(request) else {}
    _runs.put(
        task_id,
        state=states.STARTED,
        started_at=now,
        finished_at=None,
        worker=request.hostname or "",
        attempts=1,
        **group,
        **again,
        # Only for a task sent by a process that does not record (another app, a shell).
        insert=(task.name, args, kwargs, request, now),
    )


def record_finished(task_id: str, task, state: str | None = None, retval=None, **kw) -> None:
    started = _started.pop(task_id, None)
    fields = {"finished_at": timezone.now()}
    if state == states.IGNORED:  # not run: revoked by staff, or its owner's guard refused it
        reason = str(retval or "")
        # A guard that refused a run staff revoked (a task that does not check revokes itself,
        # tasks_admin/base.py): it stays revoked. Asked only of the few runs that were refused.
        revoked = reason == REVOKED_BY_STAFF or was_revoked(task_id)
        fields |= {"state": states.REVOKED if revoked else SKIPPED, "exception_message": reason}
    elif state:  # None when the run was cut short (terminated): the revoke handler says how it ended
        fields["state"] = state
    if started is not None:
        fields["runtime"] = round(time.monotonic() - started, 6)
    if state in (states.SUCCESS, None) and not writebehind.run_again(task.request):
        _runs.put(task_id, **fields)
    else:  # failed or retried: written at once, like the error the failure handler wrote
        _best_effort(lambda: _runs.write_now(task_id, **fields))


def record_failure(sender, task_id: str, exception: BaseException, **kw) -> None:
    """Also sent by the worker's main process when a child dies or hits the hard time limit."""
    expected = isinstance(exception, tuple(getattr(sender, "throws", ()) or ()))
    fields = {
        "state": states.FAILURE,
        "finished_at": timezone.now(),
        "exception_type": type(exception).__name__,
        "exception_message": str(exception)[:2000],
        "expected_failure": expected,
    }
    _best_effort(lambda: _runs.write_now(task_id, **fields))
    _best_effort(lambda: _count_runs_at_least(task_id, (sender.request.retries or 0) + 1))


def _count_runs_at_least(task_id: str, runs: int) -> None:
    """A task failing or retried as run `runs` ran at least that often: a pool process killed
    under it (the OOM killer) took the record of its start with it (tasks_admin/writebehind.py)."""
    TaskRecord.objects.filter(task_id=task_id, attempts__lt=runs).update(attempts=runs)


def record_retry(request, reason: BaseException | None = None, **kw) -> None:
    # No reason when the worker cancels a running task itself (broker connection lost,
    # cold shutdown): the scenario that restarts Redis found this handler raising there.
    error = getattr(reason, "exc", None) or reason or "cancelled by Celery"  # Retry wraps the error that caused it
    fields = {
        "exception_type": type(error).__name__ if reason is not None else "Retry",
        "exception_message": str(error)[:2000],
    }
    _best_effort(lambda: _runs.write_now(request.id, **fields))


def restore_revoked(sender=None, **kw) -> None:
    """Celery keeps revokes in the memory of the workers that were online: a worker that
    starts later would run a task staff revoked. Teach it the recent ones from the history."""
    since = timezone.now() - timedelta(days=1)
    try:
        worker_state.revoked.update(
            TaskRecord.objects.filter(state=states.REVOKED, started_at__isnull=True, sent_at__gte=since)
            .order_by("-id")
            .values_list("task_id", flat=True)[:10_000]
        )
    except DatabaseError:
        logger.warning("Could not load revoked tasks from the history", exc_info=True)


def record_revoked(request, terminated: bool = False, expired: bool = False, **kw) -> None:
    message = "expired" if expired else ("terminated" if terminated else "revoked")
    fields = {"state": states.REVOKED, "finished_at": timezone.now(), "exception_message": message}
    _best_effort(lambda: _runs.write_now(request.id, **fields))
