"""The task console's periodic jobs (default schedules: tasks_admin/periodic.py)."""

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from . import alert_delivery, alerts, cleanup

NOTICE_LOST_AFTER = timedelta(minutes=5)


# Long deletes get time; a run cut short by the soft limit is retried and carries on.
@shared_task(soft_time_limit=300, time_limit=330)
def cleanup_task_history(batch_size: int = cleanup.BATCH_SIZE) -> dict[str, int]:
    """Daily: delete task results and history older than TASK_HISTORY_DAYS, in batches."""
    return cleanup.cleanup_task_history(batch_size=batch_size)


@shared_task
def evaluate_alerts() -> dict[str, int]:
    """Every minute: evaluate the alert rules and send the notices of the alerts' transitions
    (and any whose task was lost: made over NOTICE_LOST_AFTER ago and never tried)."""
    now = timezone.now()
    notices = alerts.evaluate(now) + alerts.unsent_notices(older_than=now - NOTICE_LOST_AFTER)
    for notice_id in dict.fromkeys(notices):
        deliver_alert_notice.delay(notice_id)
    return {"notices": len(notices)}


@shared_task
def deliver_alert_notice(notice_id: int) -> bool:
    """Send one alert notice (e-mail or webhook), retried with backoff on transient errors."""
    return alert_delivery.deliver(notice_id)
