"""Default schedules of the catalog's periodic jobs (installed by `manage.py setup_periodic_tasks`)."""

from django_celery_beat.models import IntervalSchedule

from tasks_admin.periodic import DefaultSchedule, every

SCHEDULES = (
    DefaultSchedule(
        "Low stock alert",
        "shop.tasks.send_low_stock_alert",
        every(1, IntervalSchedule.HOURS),
        description="E-mail staff the products with LOW_STOCK_THRESHOLD units or fewer, once a day per set.",
    ),
)
