"""What staff may do to a task from the console, and who decides what it means.

The console is generic: by default an action means what it means to Celery — *retry* sends
the task again with its exact arguments, *revoke* tells the workers not to run a task that
has not started, *terminate* stops a running one. An app whose tasks mean more (an order's
workflow steps move money and stock) registers a TaskOwner for them from its
AppConfig.ready(); the console then offers, labels and performs every action on those tasks
through the owner, which may give it another meaning (revoking an order's queued charge
cancels the order) or refuse it with a message. The console never imports the apps.
"""

from dataclasses import dataclass
from enum import StrEnum

from celery import states
from django.contrib.auth.models import AbstractBaseUser

from . import services
from .graph import Graph, canvas_graph
from .models import PLANNED, TaskRecord
from .services import ActionRefused


class Action(StrEnum):
    RETRY = "retry"
    REVOKE = "revoke"
    TERMINATE = "terminate"


@dataclass(frozen=True)
class Offer:
    """An action the console offers on a task in its current state."""

    action: Action
    label: str  # the button's text
    title: str = ""  # what it will do, said before it is done


@dataclass(frozen=True)
class Outcome:
    """What an action did, for staff to read; the new run's task id when it sent one."""

    message: str
    new_task_id: str = ""


RETRYABLE_STATES = (states.FAILURE, states.REVOKED)
REVOCABLE_STATES = (PLANNED, states.PENDING, states.RETRY)


class TaskOwner:
    """Celery's own meaning of each action; subclass it to give an app's tasks theirs."""

    def offers(self, record: TaskRecord) -> list[Offer]:
        if record.state in RETRYABLE_STATES and not record.resolved_at:  # not retried (or resolved) already
            return [Offer(Action.RETRY, "Retry", "Send the task again with the same arguments, under a new id")]
        if record.state in REVOCABLE_STATES:
            return [Offer(Action.REVOKE, "Revoke", "Tell the workers not to run it")]
        if record.state == states.STARTED:
            return [Offer(Action.TERMINATE, "Terminate", "Stop the process running it (SIGTERM)")]
        return []

    def graph(self, record: TaskRecord) -> Graph | None:
        """The workflow the task belongs to, for its page: by default the canvas rebuilt from
        the history's parent and chord links."""
        return canvas_graph(record.root_id)

    def perform(self, action: Action, record: TaskRecord, *, user: AbstractBaseUser, reason: str) -> Outcome:
        """Do `action`; say what was done. Raises ActionRefused."""
        offer(self, record, action)
        if action == Action.RETRY:
            task_id = services.send_again(record, user=user, reason=reason)
            return Outcome(f"Sent {record.task_name} again as task {task_id}.", task_id)
        services.revoke(record, user=user, reason=reason, terminate=action == Action.TERMINATE)
        if action == Action.TERMINATE:
            return Outcome(f"Asked the workers to terminate task {record.task_id}.")
        return Outcome(f"Revoked task {record.task_id}.")


def offer(owner: TaskOwner, record: TaskRecord, action: Action) -> Offer:
    """The owner's offer of `action` on `record`, or ActionRefused saying it is not offered now."""
    for candidate in owner.offers(record):
        if candidate.action == action:
            return candidate
    state = dict(TaskRecord._meta.get_field("state").choices).get(record.state, record.state)
    raise ActionRefused(f"{action.capitalize()} is not possible for this task now (it is {state}).")


_default = TaskOwner()
_owners: dict[str, TaskOwner] = {}


def register(owner: TaskOwner, task_names) -> None:
    """Let `owner` decide what console actions mean for the tasks of these names."""
    for name in task_names:
        _owners[name] = owner


def owner_of(record: TaskRecord) -> TaskOwner:
    return _owners.get(record.task_name, _default)


def offers(record: TaskRecord) -> list[Offer]:
    return owner_of(record).offers(record)


def perform(action: Action, record: TaskRecord, *, user: AbstractBaseUser, reason: str = "") -> Outcome:
    """Do `action` on `record` as its owner means it; say what was done. Raises ActionRefused."""
    return owner_of(record).perform(action, record, user=user, reason=reason)
