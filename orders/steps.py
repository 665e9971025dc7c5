"""Base tasks of the order workflow: a task takes the order id and calls one service.

A step's success is recorded by its service, in the transaction of its effect
(orders/services.py); its failure or refusal here. A step whose order has moved on
(cancelled, held, not paid) does nothing: its service raises StepNotAllowed, the step is
recorded as not run, and the task is ignored — no error callback, no dead letter, and the
rest of the chain is not sent (tests/integration/test_order_safety.py).
"""

import logging
from contextlib import suppress

from celery.exceptions import Ignore
from django.db import DatabaseError, InterfaceError

from notifications import services as notifications
from notifications.tasks import DeliveryTask
from tasks_admin.base import RetryingTask
from tasks_admin.errors import PermanentProviderError

from . import messages
from .errors import MessageCancelled, StepNotAllowed
from .models import WorkflowStep
from .services import settle_step

logger = logging.getLogger(__name__)
State = WorkflowStep.State


class OrderTask(RetryingTask):
    """A task whose first argument is an order id: the task history records the order as what the
    task is about (tasks_admin/subjects.py)."""

    subject_model = "orders.Order"
    subject_argument = 0


class WorkflowStepTask(OrderTask):
    """A fulfilment step of the order workflow. Its name is the step's name; its one argument the order id."""

    # Nothing reads a step's result (the workflow's signatures are immutable, its outcome is the
    # WorkflowStep's and the task history's): only its errors are stored
    # (CELERY_TASK_STORE_ERRORS_EVEN_IF_IGNORED). A chord still counts its header steps.
    ignore_result = True
    # Staff revoke a step only by cancelling or holding its order first (orders/console.py), and
    # its service refuses to act for such an order: no revoke query before each run.
    check_revoked = False

    @property
    def step(self) -> str:
        return self.name.rpartition(".")[2]

    def attempt(self, order_id: str):
        try:
            return self.run(order_id)
        except StepNotAllowed as exc:
            settle_step(order_id, self.step, State.SKIPPED, error=str(exc))
            logger.info("%s[%s] not run: %s", self.name, self.request.id, exc)
            raise Ignore(str(exc)) from exc

    def record_failure(self, args: tuple, exc: BaseException, *, final: bool) -> None:
        if not final:  # a retry is the run's fact (task history), not the step's outcome
            return
        (order_id,) = args
        # Best effort: after an OperationalError the connection is dead and this write raises
        # InterfaceError ("connection already closed"), which is not a DatabaseError: escaping
        # from here it failed the task and stopped the order (tests/reliability/test_database_outage.py).
        with suppress(DatabaseError, InterfaceError):
            settle_step(order_id, self.step, State.FAILURE, error=f"{type(exc).__name__}: {exc}")


class ConfirmationTask(OrderTask, DeliveryTask):
    """Sends the order's confirmation e-mail or SMS (`channel`), queued when it was confirmed."""

    channel: str
    # Nothing reads a message's result either (its Notification row is the fact): only errors stored.
    ignore_result = True
    # Staff revoke a message only by cancelling it first (orders/console.py), and its service
    # refuses to send a cancelled one: no revoke query before each run.
    check_revoked = False

    def attempt(self, order_id: str):
        try:
            return self.run(order_id)
        except MessageCancelled as exc:
            logger.info("%s[%s] not run: %s", self.name, self.request.id, exc)
            raise Ignore(str(exc)) from exc

    def message_key(self, args: tuple) -> str:
        (order_id,) = args
        return messages.key(order_id, "confirmation", self.channel)


class CancellationStepTask(OrderTask):
    """A step of the cancellation workflow (orders/cancellation_workflow.py). One that finds its
    order not cancelling does nothing, and the rest of the canvas is not sent."""

    def attempt(self, order_id: str):
        try:
            return self.run(order_id)
        except StepNotAllowed as exc:
            logger.info("%s[%s] not run: %s", self.name, self.request.id, exc)
            raise Ignore(str(exc)) from exc


class CancellationMessageTask(CancellationStepTask, DeliveryTask):
    """Sends the cancellation e-mail or SMS (`channel`), in the cancellation's chord. A message the
    provider refuses is recorded as failed (staff see it on the order) and does not keep the
    order from being cancelled: the chord goes on. Transient errors are retried as usual."""

    channel: str

    def message_key(self, args: tuple) -> str:
        (order_id,) = args
        return messages.key(order_id, "cancelled", self.channel)

    def attempt(self, order_id: str):
        try:
            return super().attempt(order_id)
        except PermanentProviderError as exc:
            notifications.give_up(self.message_key((order_id,)), f"{type(exc).__name__}: {exc}")
            logger.warning("%s[%s]: the %s was refused: %s", self.name, self.request.id, self.channel, exc)
            return 0
