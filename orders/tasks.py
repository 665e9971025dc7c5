"""The order workflow's tasks (each takes the order id and calls one service), and the
orders' periodic jobs.

How the workflow's tasks are put together: orders/workflow.py.
"""

from celery import chord, shared_task

from . import maintenance, reports, services
from .payments import PaymentDeclined
from .steps import OrderTask, RetryingTask, WorkflowStepTask


# Expected outcomes, logged without a traceback and kept out of the dead letters: a
# declined card, and an order stopped (e.g. cancelled as stale) while its charge waited.
@shared_task(base=WorkflowStepTask, throws=(PaymentDeclined, services.OrderNotActive))
def charge_payment(order_id: str) -> str:
    return services.charge_payment(order_id)


@shared_task(base=WorkflowStepTask)
def create_shipment(order_id: str) -> str:
    return services.create_shipment(order_id)


@shared_task(base=WorkflowStepTask)
def send_confirmation_email(order_id: str) -> int:
    return services.send_confirmation_email(order_id)


@shared_task(base=WorkflowStepTask)
def send_confirmation_sms(order_id: str) -> int:
    return services.send_confirmation_sms(order_id)


@shared_task(base=WorkflowStepTask)
def record_sales(order_id: str) -> bool:
    return services.record_sales(order_id)


@shared_task(base=WorkflowStepTask)
def confirm_order(order_id: str) -> bool:
    return services.confirm_order(order_id)


@shared_task(base=OrderTask)
def handle_order_failure(order_id: str) -> str:
    return services.fail_order(order_id)


# Periodic jobs (schedules: tasks_admin/periodic.py). The batch jobs get more time than a
# workflow step; what a run leaves undone, its retry (a soft time limit is transient) or
# the next run picks up, since each order is handled in its own transaction.


@shared_task(base=RetryingTask, soft_time_limit=300, time_limit=330)
def cancel_stale_orders() -> dict[str, int]:
    """Cancel orders left unpaid past STALE_ORDER_MINUTES, releasing the stock they hold."""
    return maintenance.cancel_stale_orders()


@shared_task(base=RetryingTask, soft_time_limit=300, time_limit=330)
def recover_stuck_workflows() -> dict[str, list[str]]:
    """Send again the workflows that stopped moving (a lost message, a broker outage at checkout)."""
    return maintenance.recover_stuck_workflows()


@shared_task(base=RetryingTask)
def build_daily_sales_report(day: str = "", chunk_size: int = reports.CHUNK_SIZE) -> str:
    """Fan the day's confirmed orders out to summarize_sales_chunk; store_sales_report adds them up.

    `day` is ISO (default: yesterday, UTC). Running it again for a day replaces its report.
    """
    report_day = reports.report_day(day)
    header = [summarize_sales_chunk.s(chunk) for chunk in reports.order_id_chunks(report_day, chunk_size)]
    chord(header, store_sales_report.s(report_day.isoformat())).apply_async()
    return report_day.isoformat()


@shared_task(base=RetryingTask)
def summarize_sales_chunk(order_ids: list[str]) -> dict:
    return reports.summarize_orders(order_ids)


@shared_task(base=RetryingTask, bind=True)
def store_sales_report(self, partials: list[dict], day: str) -> dict:
    report = reports.store_report(day, partials, task_id=self.request.id or "")
    return {"day": day, "orders": report.orders, "units": report.units, "revenue": str(report.revenue)}
