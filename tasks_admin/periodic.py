"""Default schedules of periodic jobs, and what the admin previews of them.

Schedules live in django-celery-beat's tables, where staff change them in the admin. Each app
declares the defaults of its own jobs in a `schedules.py` module (`SCHEDULES`, a tuple of
DefaultSchedule); `python manage.py setup_periodic_tasks` installs those that are missing (by
name) and leaves every existing one exactly as it is.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime
from importlib import import_module
from importlib.util import find_spec

from django.apps import apps
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


def every(number: int, period: str) -> IntervalSchedule:
    """An interval schedule, e.g. every(5, IntervalSchedule.MINUTES)."""
    return IntervalSchedule(every=number, period=period)


def daily_at(hour: int, minute: int) -> CrontabSchedule:
    """A crontab schedule once a day, at hour:minute UTC."""
    return CrontabSchedule(
        minute=str(minute), hour=str(hour), day_of_month="*", month_of_year="*", day_of_week="*", timezone="UTC"
    )


SCHEDULES = (
    DefaultSchedule(
        "Clean up task history",
        "tasks_admin.tasks.cleanup_task_history",
        daily_at(3, 30),
        description="Delete task results and history older than TASK_HISTORY_DAYS, in batches.",
    ),
    DefaultSchedule(
        "Evaluate alert rules",
        "tasks_admin.tasks.evaluate_alerts",
        every(1, IntervalSchedule.MINUTES),
        description="Open, update and resolve business alerts (tasks_admin/alerts.py) and send their notices.",
    ),
)


def defaults() -> list[DefaultSchedule]:
    """The default schedules every installed app declares in its `schedules` module (this one's too)."""
    found = list(SCHEDULES)
    for config in apps.get_app_configs():
        module = f"{config.name}.schedules"
        if config.name != __package__ and find_spec(module) is not None:
            found.extend(import_module(module).SCHEDULES)
    return found


SCHEDULE_FIELDS = {IntervalSchedule: "interval", CrontabSchedule: "crontab"}


def install_default_schedules() -> list[tuple[str, bool]]:
    """Create the default periodic tasks that do not exist yet; return (name, created) for each."""
    outcome = []
    for default in defaults():
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
