"""The task console's periodic jobs (default schedules: tasks_admin/periodic.py)."""

from celery import shared_task

from . import cleanup


# Long deletes get time; a run cut short by the soft limit is retried and carries on.
@shared_task(soft_time_limit=300, time_limit=330)
def cleanup_task_history(batch_size: int = cleanup.BATCH_SIZE) -> dict[str, int]:
    """Daily: delete task results and history older than TASK_HISTORY_DAYS, in batches."""
    return cleanup.cleanup_task_history(batch_size=batch_size)
