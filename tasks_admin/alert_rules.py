"""The task layer's own alert rules, read from the database: dead letters, periodic jobs that
missed their window, no beat holding the lease, old queued tasks, failing tasks
(tests/unit/test_alerts.py, tests/integration/test_business_alerts.py)."""

from collections.abc import Iterator
from datetime import datetime, timedelta
from urllib.parse import urlencode

from celery import states
from django.db.models import Count, Max, Min, Q
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from . import periodic
from .alerts import Finding, Rule, register_rule
from .beat import LOCK_NAME
from .models import AlertRule, SchedulerLock, TaskRecord

MIN_RUNS = 5  # a failure rate over fewer runs says too little to page anyone
WINDOW_MINUTES = 15  # the windowed rules' default, and their window if staff cleared it


def _changelist(**filters: str) -> str:
    url = reverse("admin:tasks_admin_taskrecord_changelist")
    return f"{url}?{urlencode(filters)}" if filters else url


def _minutes(row: AlertRule) -> float:
    return row.window_minutes or WINDOW_MINUTES


def _window(row: AlertRule, now: datetime) -> datetime:
    return now - timedelta(minutes=_minutes(row))


def _dead_letters(letters, threshold: float, says: str) -> Iterator[Finding]:
    """One finding when there are more `letters` than `threshold`: "<count> dead letter(s) <says>"."""
    count = letters.count()
    if count > threshold:
        yield Finding(
            f"{count} dead letter{'s' if count != 1 else ''} {says}.",
            count,
            subjects=list(letters.order_by("-id")[:20]),
            link=reverse("admin:tasks_admin_deadletter_changelist"),
        )


def dead_letters(row: AlertRule, now: datetime) -> Iterator[Finding]:
    yield from _dead_letters(
        TaskRecord.objects.dead_letters(), row.threshold, f"waiting for staff (more than {row.threshold:g})"
    )


def dead_letters_growing(row: AlertRule, now: datetime) -> Iterator[Finding]:
    new = TaskRecord.objects.dead_letters().filter(finished_at__gte=_window(row, now))
    yield from _dead_letters(new, row.threshold, f"new in the last {_minutes(row):g} min")


def _due_after(task: PeriodicTask, moment: datetime) -> datetime:
    """When `task`'s schedule next falls due after `moment`."""
    if task.interval_id:
        return moment + task.interval.schedule.run_every
    start, delta, _ = task.crontab.schedule.remaining_delta(moment)
    return start + delta


def periodic_job_late(row: AlertRule, now: datetime) -> Iterator[Finding]:
    """Each interval or crontab job (enabled, or one of the apps' defaults switched off) whose
    next due time after its last run in the task history (else beat's last send, else its last
    change) is
    more than `threshold` minutes past: a dead beat, a job switched off, a schedule that never fires."""
    defaults = {default.name for default in periodic.defaults()}
    jobs = (
        PeriodicTask.objects.filter(Q(enabled=True) | Q(name__in=defaults), one_off=False)
        .filter(Q(interval__isnull=False) | Q(crontab__isnull=False))
        .filter(Q(expires__isnull=True) | Q(expires__gt=now))
        .select_related("interval", "crontab")
    )
    last_runs = dict(
        TaskRecord.objects.filter(periodic_task_name__in=[job.name for job in jobs])
        .order_by()
        .values_list("periodic_task_name")
        .annotate(last=Max("sent_at"))
    )
    grace = timedelta(minutes=row.threshold)
    for job in jobs:
        if job.start_time and job.start_time > now:
            continue
        last = last_runs.get(job.name)
        # Beat's own last send when the history no longer has a run (cleaned up after TASK_HISTORY_DAYS).
        due = _due_after(job, last or job.last_run_at or job.date_changed)
        if now > due + grace:
            since = f"last ran {last:%Y-%m-%d %H:%M:%S} UTC" if last else "never ran"
            off = " It is switched off." if not job.enabled else ""
            yield Finding(
                f"Periodic job “{job.name}” {since}; it was due {due:%Y-%m-%d %H:%M:%S} UTC "
                f"(grace {row.threshold:g} min).{off}",
                round((now - due).total_seconds() / 60, 1),
                key=job.name,
                subjects=[job],
                link=reverse("admin:django_celery_beat_periodictask_change", args=[job.pk]),
            )


def no_beat(row: AlertRule, now: datetime) -> Iterator[Finding]:
    """No beat has held the scheduler lease for `threshold` minutes: nothing periodic is sent."""
    expires_at = SchedulerLock.objects.filter(name=LOCK_NAME).values_list("expires_at", flat=True).first()
    if expires_at is None:
        yield Finding("No beat has ever held the scheduler lease: no periodic job is sent.", 0, key=LOCK_NAME)
    elif now - expires_at > timedelta(minutes=row.threshold):
        lapsed = (now - expires_at).total_seconds() / 60
        yield Finding(
            f"No beat holds the scheduler lease: it lapsed {lapsed:.1f} min ago; no periodic job is sent.",
            round(lapsed, 1),
            key=LOCK_NAME,
        )


def queue_age(row: AlertRule, now: datetime) -> Iterator[Finding]:
    """Per queue, the oldest task sent and not started (due now: no future countdown), from the history."""
    oldest = (
        TaskRecord.objects.filter(state=states.PENDING)
        .filter(Q(eta__isnull=True) | Q(eta__lte=now))
        .order_by()
        .values_list("queue")
        .annotate(oldest=Min("sent_at"), waiting=Count("id"))
    )
    for queue, sent_at, waiting in oldest:
        age = (now - sent_at).total_seconds() / 60
        if age > row.threshold:
            yield Finding(
                f"Queue “{queue or 'default'}”: the oldest of {waiting} queued tasks was sent {age:.1f} min ago "
                f"(more than {row.threshold:g}): no worker takes them.",
                round(age, 1),
                key=queue,
                link=_changelist(queue=queue, state__exact=states.PENDING),
            )


def task_failure_rate(row: AlertRule, now: datetime) -> Iterator[Finding]:
    """Per task name over the window: failures (not a declared outcome such as a declined card)
    per run that ended, above `threshold` percent, over MIN_RUNS runs or more."""
    counts = (
        TaskRecord.objects.filter(finished_at__gte=_window(row, now), state__in=(states.SUCCESS, states.FAILURE))
        .order_by()
        .values_list("task_name")
        .annotate(runs=Count("id"), failures=Count("id", filter=Q(state=states.FAILURE, expected_failure=False)))
    )
    for task_name, runs, failures in counts:
        rate = 100 * failures / runs
        if runs >= MIN_RUNS and rate > row.threshold:
            yield Finding(
                f"{task_name}: {failures} of {runs} runs failed in the last {_minutes(row):g} min "
                f"({rate:.0f} %, more than {row.threshold:g} %).",
                round(rate, 1),
                key=task_name,
                link=_changelist(task=task_name),
            )


for _rule in (
    Rule("dead-letters", "Dead letters", "dead letters", 0, dead_letters, help="Open dead letters above this."),
    Rule(
        "dead-letters-growing",
        "Dead letters growing",
        "new dead letters",
        0,
        dead_letters_growing,
        default_window_minutes=WINDOW_MINUTES,
        help="New dead letters within the window above the threshold.",
    ),
    Rule(
        "periodic-job-late",
        "Periodic job missed its window",
        "minutes of grace",
        5,
        periodic_job_late,
        help="A periodic job not run this many minutes after it was due (judged from its schedule and the history).",
    ),
    Rule("no-beat", "No beat holds the lease", "minutes", 1, no_beat, help="The scheduler lease lapsed this long ago."),
    Rule(
        "queue-age",
        "Queued tasks waiting",
        "minutes",
        5,
        queue_age,
        help="A queue whose oldest task waits longer than this.",
    ),
    Rule(
        "task-failure-rate",
        "Task failure rate",
        "%",
        20,
        task_failure_rate,
        default_window_minutes=WINDOW_MINUTES,
        help=f"A task failing more than this percent of its runs within the window (at least {MIN_RUNS} runs).",
    ),
):
    register_rule(_rule)
