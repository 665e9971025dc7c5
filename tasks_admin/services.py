"""The console's primitives: send a task again, revoke, terminate, resolve, run a periodic job.
Each is audited here — a TaskAction row and an entry in the admin's history log. The permission
is checked by the caller (the admin), and what an action means for a task is decided by its
owner (tasks_admin/console.py), which calls these.
"""

import uuid

from celery import current_app, states
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import AbstractBaseUser
from django.db import models, transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask, PeriodicTasks
from kombu.exceptions import OperationalError as BrokerError
from kombu.utils.json import loads as json_loads

from . import subjects
from .history import RETRY_OF_HEADER, decode_arguments
from .models import TaskAction, TaskRecord


class ActionRefused(Exception):
    """The action does not apply to this task (or its owner's object) now; the message says why."""


def send_again(record: TaskRecord, *, user: AbstractBaseUser, reason: str = "", send: bool = True) -> str:
    """Send a task again with its exact arguments and routing under a new id; return the id.

    The new run is linked to this one (retry_of), and this one counts as resolved. With
    `send=False` the caller sends the new run itself (an owner re-sending a whole workflow).
    """
    new_task_id = str(uuid.uuid4())
    with transaction.atomic():
        TaskRecord.objects.filter(pk=record.pk).update(
            resolved_at=timezone.now(), resolved_by=user, resolution_note=f"Retried as {new_task_id}. {reason}".strip()
        )
        audit(TaskAction.Kind.RETRY, user, reason, record, new_task_id=new_task_id, message=f"Retried as {new_task_id}")
        if send:
            transaction.on_commit(lambda: _send_again(record, new_task_id))
    return new_task_id


def _send_again(record: TaskRecord, task_id: str) -> None:
    options = {"task_id": task_id, "headers": {RETRY_OF_HEADER: record.task_id}}
    if record.queue:
        options["queue"] = record.queue
    if record.priority is not None:
        options["priority"] = record.priority
    current_app.send_task(
        record.task_name, args=decode_arguments(record.args), kwargs=decode_arguments(record.kwargs), **options
    )


def revoke(
    record: TaskRecord, *, user: AbstractBaseUser, reason: str = "", terminate: bool = False, message: str = ""
) -> None:
    """Tell the workers not to run a task (or, with `terminate`, to stop the process running it:
    SIGTERM); the history keeps it revoked, so a worker that did not hear it skips it too
    (tasks_admin/base.py)."""
    with transaction.atomic():
        if not terminate:
            TaskRecord.objects.filter(pk=record.pk).exclude(state__in=states.READY_STATES).update(
                state=states.REVOKED, finished_at=timezone.now()
            )
        kind = TaskAction.Kind.TERMINATE if terminate else TaskAction.Kind.REVOKE
        audit(kind, user, reason, record, message=message or kind.label.capitalize())
        transaction.on_commit(lambda: current_app.control.revoke(record.task_id, terminate=terminate, signal="SIGTERM"))


def resolve(record: TaskRecord, *, user: AbstractBaseUser, note: str) -> None:
    if record.state != states.FAILURE or record.resolved_at:
        raise ActionRefused("Only an unresolved failed task can be resolved.")
    with transaction.atomic():
        TaskRecord.objects.filter(pk=record.pk).update(
            resolved_at=timezone.now(), resolved_by=user, resolution_note=note
        )
        audit(TaskAction.Kind.RESOLVE, user, note, record, message=f"Resolved: {note}")


def resolve_failures(records: models.QuerySet, *, user: AbstractBaseUser | None, note: str) -> int:
    """Mark failed runs as dealt with (their work was sent again another way); return how many."""
    return records.filter(state=states.FAILURE, resolved_at__isnull=True).update(
        resolved_at=timezone.now(), resolved_by=user, resolution_note=note
    )


def audit(
    kind: str,
    user: AbstractBaseUser,
    reason: str,
    record: TaskRecord | None = None,
    *,
    message: str,
    new_task_id: str = "",
    subject: models.Model | None = None,
    target: models.Model | None = None,
    periodic_task_name: str = "",
) -> TaskAction:
    target = target or record
    LogEntry.objects.log_actions(
        user_id=user.pk,
        queryset=[target],
        action_flag=CHANGE,
        change_message=f"{message}. {reason}".strip() if reason else message,
        single_object=True,
    )
    return TaskAction.objects.create(
        kind=kind,
        user=user,
        reason=reason,
        task=record,
        new_task_id=new_task_id,
        **(
            subjects.of_object(subject)
            if subject is not None or record is None
            else {"subject_type": record.subject_type, "subject_id": record.subject_id}
        ),
        periodic_task_name=periodic_task_name,
    )


def run_periodic_task_now(periodic_task: PeriodicTask, *, user: AbstractBaseUser) -> str:
    """Send a periodic task's task now, as beat would (arguments, routing, headers); return its task id.

    The `periodic_task_name` header links the run to the periodic task in the task
    history. Its last run and run count are updated, and beat is told the schedule
    changed, so it counts the next run from this one. The task is sent last, inside
    the transaction: if the broker cannot be reached, nothing is recorded.
    """
    current_app.loader.import_default_modules()
    if periodic_task.task not in current_app.tasks:
        raise ActionRefused(f"No task named {periodic_task.task} is registered.")
    task_id = str(uuid.uuid4())
    try:
        with transaction.atomic():
            PeriodicTask.objects.filter(pk=periodic_task.pk).update(
                last_run_at=timezone.now(), total_run_count=models.F("total_run_count") + 1
            )
            PeriodicTasks.update_changed()
            audit(
                TaskAction.Kind.RUN_PERIODIC,
                user,
                "",
                target=periodic_task,
                new_task_id=task_id,
                periodic_task_name=periodic_task.name,
                message=f"Ran now as {task_id}",
            )
            _send_periodic(periodic_task, task_id)
    except BrokerError as exc:
        raise ActionRefused(f"The broker could not be reached, nothing was sent: {exc}") from exc
    return task_id


def _send_periodic(periodic_task: PeriodicTask, task_id: str) -> None:
    headers = {**json_loads(periodic_task.headers or "{}"), "periodic_task_name": periodic_task.name}
    options = {"task_id": task_id, "headers": headers}
    for option in ("queue", "exchange", "routing_key", "priority"):
        value = getattr(periodic_task, option)
        if value is not None and value != "":
            options[option] = value
    current_app.send_task(
        periodic_task.task,
        args=json_loads(periodic_task.args or "[]"),
        kwargs=json_loads(periodic_task.kwargs or "{}"),
        **options,
    )
