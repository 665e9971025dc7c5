"""The order workflow's tasks. Each takes the order id and calls one service.

How they are put together: orders/workflow.py.
"""

from celery import shared_task

from . import services
from .payments import PaymentDeclined
from .steps import OrderTask, WorkflowStepTask


# A declined card is an expected outcome, logged without a traceback.
@shared_task(base=WorkflowStepTask, throws=(PaymentDeclined,))
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
