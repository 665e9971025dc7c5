"""Delivery of a queued message, as a task of its own: retried with backoff while the provider
fails transiently, a dead letter when it refuses (tasks_admin/base.py)."""

from celery import shared_task

from . import services


@shared_task
def deliver_message(key: str) -> int:
    """Send the message queued under the business `key`, once; return its Notification id."""
    return services.deliver(key).pk
