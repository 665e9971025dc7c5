"""Default schedules of the orders' periodic jobs (installed by `manage.py setup_periodic_tasks`)."""

from django_celery_beat.models import IntervalSchedule

from tasks_admin.periodic import DefaultSchedule, daily_at, every

SCHEDULES = (
    DefaultSchedule(
        "Cancel stale orders",
        "orders.tasks.cancel_stale_orders",
        every(5, IntervalSchedule.MINUTES),
        description="Cancel orders left unpaid past STALE_ORDER_MINUTES and release their stock.",
    ),
    DefaultSchedule(
        "Recover stuck workflows",
        "orders.tasks.recover_stuck_workflows",
        every(2, IntervalSchedule.MINUTES),
        description="Send on the order workflows and messages that have not moved for STUCK_WORKFLOW_MINUTES.",
    ),
    DefaultSchedule(
        "Daily sales report",
        "orders.tasks.build_daily_sales_report",
        daily_at(0, 15),
        description="Add up yesterday's confirmed orders (UTC) into a sales report.",
    ),
)
