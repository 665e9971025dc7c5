"""Delivery of a queued message, as a task of its own: retried with backoff while the provider
fails transiently, a dead letter when it refuses (tasks_admin/base.py)."""

from celery import shared_task

from tasks_admin.base import RetryingTask

from . import services


class DeliveryTask(RetryingTask):
    """Delivers the message under a business key; when it fails for good, so does the message."""

    def message_key(self, args: tuple) -> str:
        return args[0]

    def record_failure(self, args: tuple, exc: BaseException, *, final: bool) -> None:
        if final:
            services.give_up(self.message_key(args), f"{type(exc).__name__}: {exc}")


@shared_task(base=DeliveryTask)
def deliver_message(key: str) -> int:
    """Send the message queued under the business `key`, once; return its Notification id."""
    return services.deliver(key).pk


@shared_task
def record_sent(key: str, provider_message_id: str) -> bool:
    """Record a message its sender sent but could not record (services.record_sent): retried
    until a worker that reaches the database runs it."""
    return services.record_sent(key, provider_message_id)
