"""The order workflow's tasks (each takes the order id and calls one service), and the orders'
periodic jobs.

How the workflow's tasks are put together: orders/workflow.py.
"""

import logging

from celery import chord, shared_task

from notifications.models import Notification

from . import cancellation, maintenance, reports, services
from .errors import NoFailedStep
from .payments import PaymentDeclined
from .steps import CancellationMessageTask, CancellationStepTask, ConfirmationTask, OrderTask, WorkflowStepTask

logger = logging.getLogger(__name__)

# How often the error callback looks again for the failure record of a worker that died under a
# step (written by the worker's main process) before leaving the order to the recovery job.
FAILURE_RECORD_RETRIES = 3


# A declined card is an expected outcome: logged without a traceback and kept out of the dead letters.
@shared_task(base=WorkflowStepTask, throws=(PaymentDeclined,))
def charge_payment(order_id: str) -> str:
    return services.charge_payment(order_id)


@shared_task(base=WorkflowStepTask)
def create_shipment(order_id: str) -> str:
    return services.create_shipment(order_id)


@shared_task(base=WorkflowStepTask)
def record_sales(order_id: str) -> bool:
    return services.record_sales(order_id)


@shared_task(base=WorkflowStepTask)
def confirm_order(order_id: str) -> bool:
    return services.confirm_order(order_id)


@shared_task(base=ConfirmationTask, channel=Notification.Channel.EMAIL)
def send_confirmation_email(order_id: str) -> int:
    return services.send_confirmation(order_id, Notification.Channel.EMAIL)


@shared_task(base=ConfirmationTask, channel=Notification.Channel.SMS)
def send_confirmation_sms(order_id: str) -> int:
    return services.send_confirmation(order_id, Notification.Channel.SMS)


@shared_task(base=OrderTask, bind=True)
def handle_order_failure(self, order_id: str) -> str:
    try:
        return services.stop_after_failure(order_id)
    except NoFailedStep:
        if self.request.retries < FAILURE_RECORD_RETRIES:
            raise  # retried: the record of a lost worker's failure may be on its way
        logger.warning("Order %s: no step failed; the recovery job carries it on", order_id)
        return "no step failed"


# The cancellation workflow (orders/cancellation_workflow.py). A refund the gateway declines fails
# for good: a dead letter staff retry from the console (the whole cancellation is sent again).


@shared_task(base=CancellationStepTask)
def refund_payment(order_id: str) -> str:
    return cancellation.refund_payment(order_id)


@shared_task(base=CancellationStepTask)
def release_stock(order_id: str) -> bool:
    return cancellation.release_stock(order_id)


@shared_task(base=CancellationMessageTask, channel=Notification.Channel.EMAIL)
def send_cancellation_email(order_id: str) -> int:
    return cancellation.send_cancellation(order_id, Notification.Channel.EMAIL)


@shared_task(base=CancellationMessageTask, channel=Notification.Channel.SMS)
def send_cancellation_sms(order_id: str) -> int:
    return cancellation.send_cancellation(order_id, Notification.Channel.SMS)


@shared_task(base=CancellationStepTask)
def record_cancellation_sales(order_id: str) -> bool:
    return cancellation.record_cancellation_sales(order_id)


@shared_task(base=CancellationStepTask)
def finish_cancellation(order_id: str) -> bool:
    return cancellation.finish(order_id)


# Periodic jobs (default schedules: orders/schedules.py). The batch jobs get more time than a
# workflow step; what a run leaves undone, its retry (a soft time limit is transient) or
# the next run picks up, since each order is handled in its own transaction.


@shared_task(soft_time_limit=300, time_limit=330)
def cancel_stale_orders() -> dict[str, int]:
    """Cancel orders left unpaid past STALE_ORDER_MINUTES, releasing the stock they hold."""
    return maintenance.cancel_stale_orders()


@shared_task(soft_time_limit=300, time_limit=330)
def recover_stuck_workflows() -> dict[str, list[str]]:
    """Send on the workflows, and the messages, that stopped moving (a lost message, a broker
    outage at checkout)."""
    return maintenance.recover_stuck_workflows()


@shared_task
def build_daily_sales_report(day: str = "", chunk_size: int = reports.CHUNK_SIZE) -> str:
    """Fan the day's confirmed orders out to summarize_sales_chunk; store_sales_report adds them up.

    `day` is ISO (default: yesterday, UTC). Running it again for a day replaces its report.
    """
    report_day = reports.report_day(day)
    header = [summarize_sales_chunk.s(chunk) for chunk in reports.order_id_chunks(report_day, chunk_size)]
    chord(header, store_sales_report.s(report_day.isoformat())).apply_async()
    return report_day.isoformat()


@shared_task
def summarize_sales_chunk(order_ids: list[str]) -> dict:
    return reports.summarize_orders(order_ids)


@shared_task(bind=True)
def store_sales_report(self, partials: list[dict], day: str) -> dict:
    report = reports.store_report(day, partials, task_id=self.request.id or "")
    return {"day": day, "orders": report.orders, "units": report.units, "revenue": str(report.revenue)}
