"""The shop's periodic jobs and their default schedules, and what the admin previews of them.

Schedules live in django-celery-beat's tables, where staff change them in the admin.
`python manage.py setup_periodic_tasks` installs the defaults below that are missing
(by name) and leaves every existing one exactly as it is.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask


@dataclass(frozen=True)
class DefaultSchedule:
    name: str
    task: str
    schedule: IntervalSchedule | CrontabSchedule  # unsaved: an equal row is reused, or created
    kwargs: dict = field(default_factory=dict)
    description: str = ""


def _every(number: int, period: str) -> IntervalSchedule:
    return IntervalSchedule(every=number, period=period)


def _daily_at(hour: int, minute: int) -> CrontabSchedule:
    return CrontabSchedule(
        minute=str(minute), hour=str(hour), day_of_month="*", month_of_year="*", day_of_week="*", timezone="UTC"
    )


DEFAULTS = (
    DefaultSchedule(
        "Cancel stale orders",
        "orders.tasks.cancel_stale_orders",
        _every(5, IntervalSchedule.MINUTES),
        description="Cancel orders left unpaid past STALE_ORDER_MINUTES and release their stock.",
    ),
    DefaultSchedule(
        "Recover stuck workflows",
        "orders.tasks.recover_stuck_workflows",
        _every(2, IntervalSchedule.MINUTES),
        description="Send again order workflows that have not moved for STUCK_WORKFLOW_MINUTES.",
    ),
    DefaultSchedule(
        "Low stock alert",
        "shop.tasks.send_low_stock_alert",
        _every(1, IntervalSchedule.HOURS),
        description="E-mail staff the products with LOW_STOCK_THRESHOLD units or fewer, once a day per set.",
    ),
    DefaultSchedule(
        "Daily sales report",
        "orders.tasks.build_daily_sales_report",
        _daily_at(0, 15),
        description="Add up yesterday's confirmed orders (UTC) into a sales report.",
    ),
    DefaultSchedule(
        "Clean up task history",
        "tasks_admin.tasks.cleanup_task_history",
        _daily_at(3, 30),
        description="Delete task results and history older than TASK_HISTORY_DAYS, in batches.",
    ),
)


SCHEDULE_FIELDS = {IntervalSchedule: "interval", CrontabSchedule: "crontab"}


def install_default_schedules() -> list[tuple[str, bool]]:
    """Create the default periodic tasks that do not exist yet; return (name, created) for each."""
    outcome = []
    for default in DEFAULTS:
        created = False
        if not PeriodicTask.objects.filter(name=default.name).exists():
            try:
                with transaction.atomic():
                    schedule = _saved(default.schedule)
                    PeriodicTask.objects.create(
                        name=default.name,
                        task=default.task,
                        kwargs=json.dumps(default.kwargs),
                        description=default.description,
                        **{SCHEDULE_FIELDS[type(schedule)]: schedule},
                    )
                created = True
            except IntegrityError:  # created meanwhile, by a setup running on another host
                pass
        outcome.append((default.name, created))
    return outcome


def _saved(schedule: IntervalSchedule | CrontabSchedule) -> IntervalSchedule | CrontabSchedule:
    """An equal schedule row, reused if one exists (staff may already have made it)."""
    values = {f.name: getattr(schedule, f.name) for f in schedule._meta.concrete_fields if not f.primary_key}
    model = type(schedule)
    return model.objects.filter(**values).order_by("pk").first() or model.objects.create(**values)


def next_run_times(task: PeriodicTask, count: int = 5, now: datetime | None = None) -> list[datetime]:
    """When beat will send `task` next, up to `count` times: for interval and crontab schedules
    (a clocked task runs once, at its time; solar schedules are not previewed)."""
    now = now or timezone.now()
    if not task.enabled or not (task.interval_id or task.crontab_id):
        return []
    if task.interval_id:
        every = task.interval.schedule.run_every

        def after(moment: datetime) -> datetime:
            return moment + every
    else:
        crontab = task.crontab.schedule

        def after(moment: datetime) -> datetime:
            start, delta, _ = crontab.remaining_delta(moment)
            return start + delta

    if task.start_time and task.start_time > now:
        times = [task.start_time]
    else:
        # Beat counts from the last run (from the last change, before the first one), and
        # sends an overdue task at once.
        times = [max(after(task.last_run_at or task.date_changed or now), now)]
    while len(times) < (1 if task.one_off else count):
        times.append(after(times[-1]))
    return [moment for moment in times if not task.expires or moment < task.expires]
