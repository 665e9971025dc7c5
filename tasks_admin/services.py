"""What staff can do to tasks from the admin. Each action is permission-checked by the
caller (the admin) and audited here: a TaskAction row and an entry in the admin's history log.
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

from orders.models import Order
from orders.workflow import continue_workflow as send_rest_of_workflow

from .history import RETRY_OF_HEADER, decode_arguments
from .models import TaskAction, TaskRecord

RETRYABLE_STATES = (states.FAILURE, states.REVOKED)
REVOCABLE_STATES = (states.PENDING, states.RETRY)


class ActionRefused(Exception):
    """The action does not apply to this task in its current state; the message says why."""


def retry_task(record: TaskRecord, *, user: AbstractBaseUser, reason: str = "") -> str:
    """Send a failed or revoked task again with its exact arguments and routing; return the new task id.

    The new run is linked to this one (retry_of), and this one counts as resolved.
    """
    if record.state not in RETRYABLE_STATES:
        raise ActionRefused(f"Only failed or revoked tasks can be retried; this one is {record.get_state_display()}.")
    new_task_id = str(uuid.uuid4())
    with transaction.atomic():
        TaskRecord.objects.filter(pk=record.pk).update(
            resolved_at=timezone.now(), resolved_by=user, resolution_note=f"Retried as {new_task_id}. {reason}".strip()
        )
        _audit(
            TaskAction.Kind.RETRY, user, reason, record, new_task_id=new_task_id, message=f"Retried as {new_task_id}"
        )
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


def revoke_task(record: TaskRecord, *, user: AbstractBaseUser, terminate: bool = False, reason: str = "") -> None:
    """Revoke a queued task, or terminate a running one (SIGTERM to the process running it)."""
    allowed = (states.STARTED,) if terminate else REVOCABLE_STATES
    if record.state not in allowed:
        verb = "terminated" if terminate else "revoked"
        raise ActionRefused(f"This task is {record.get_state_display()}; it cannot be {verb}.")
    with transaction.atomic():
        TaskRecord.objects.filter(pk=record.pk).update(state=states.REVOKED, finished_at=timezone.now())
        kind = TaskAction.Kind.TERMINATE if terminate else TaskAction.Kind.REVOKE
        _audit(kind, user, reason, record, message=kind.label.capitalize())
        transaction.on_commit(lambda: current_app.control.revoke(record.task_id, terminate=terminate, signal="SIGTERM"))


def resolve_dead_letter(record: TaskRecord, *, user: AbstractBaseUser, note: str) -> None:
    if record.state != states.FAILURE or record.resolved_at:
        raise ActionRefused("Only an unresolved failed task can be resolved.")
    with transaction.atomic():
        TaskRecord.objects.filter(pk=record.pk).update(
            resolved_at=timezone.now(), resolved_by=user, resolution_note=note
        )
        _audit(TaskAction.Kind.RESOLVE, user, note, record, message=f"Resolved: {note}")


def continue_workflow(order: Order, *, user: AbstractBaseUser, reason: str = "") -> list[str]:
    """Re-run an order's failed (or never run) steps and the rest of its canvas; return the steps sent."""
    with transaction.atomic():
        steps = send_rest_of_workflow(str(order.pk))
        # The failed runs it replaces are dealt with.
        TaskRecord.objects.filter(order=order, state=states.FAILURE, resolved_at__isnull=True).update(
            resolved_at=timezone.now(), resolved_by=user, resolution_note="Workflow continued."
        )
        _audit(
            TaskAction.Kind.CONTINUE_WORKFLOW,
            user,
            reason,
            order=order,
            target=order,
            message=f"Continued the workflow: {', '.join(steps) or 'nothing left to run'}",
        )
    return steps


def _audit(
    kind: str,
    user: AbstractBaseUser,
    reason: str,
    record: TaskRecord | None = None,
    *,
    message: str,
    new_task_id: str = "",
    order: Order | None = None,
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
        order_id=order.pk if order else (record.order_id if record else None),
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
            _audit(
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
