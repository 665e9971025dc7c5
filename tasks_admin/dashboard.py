"""The task console's dashboard: open business alerts, throughput, per-task health, the broker's queues and
the workers online."""

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from celery import current_app, states
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from . import alerts, charts, metrics
from .alerts_admin import subject_links
from .models import Alert

REFRESH_SECONDS = 15
OPEN_ALERTS_SHOWN = 50


@dataclass(frozen=True)
class Tile:
    """A count an app shows on the dashboard (the orders app: stuck orders), linked to its list."""

    key: str  # data-metric="…", for tests and scrapers
    label: Callable[[], str]  # read when the page is drawn, as the rest: settings may change
    count: Callable[[], int]
    url: Callable[[], str]


_tiles: list[Tile] = []


def register_tile(tile: Tile) -> None:
    """Add a count to the dashboard's tiles: shown as an alert when it is not zero."""
    _tiles.append(tile)


def dashboard_view(request: HttpRequest) -> TemplateResponse:
    """Read-only, so viewing the task history is the permission it takes (admin_view has checked staff)."""
    if not request.user.has_perm("tasks_admin.view_taskrecord"):
        raise PermissionDenied
    now = timezone.now()
    hour_step, day_step = timedelta(minutes=1), timedelta(minutes=15)
    hour = metrics.throughput(now=now, span=timedelta(hours=1), step=hour_step)
    day = metrics.throughput(now=now, span=timedelta(days=1), step=day_step)
    queued = metrics.queued_by_queue()
    broker = metrics.read_broker(current_app)
    if broker is not None:  # each queue with what the history shows queued in it
        broker.queues[:] = [replace(queue, recorded=queued.get(queue.name, 0)) for queue in broker.queues]
    context = {
        **admin.site.each_context(request),
        "title": "Task dashboard",
        "refresh_seconds": REFRESH_SECONDS,
        "hour_totals": metrics.totals(hour),
        "day_totals": metrics.totals(day),
        "hour_chart": charts.throughput_chart(
            hour, step=hour_step, chart_id="hour", title="Tasks per minute over the last hour"
        ),
        "day_chart": charts.throughput_chart(
            day, step=day_step, chart_id="day", title="Tasks per minute over the last day, averaged per 15 minutes"
        ),
        "task_stats": metrics.task_stats(since=now - timedelta(days=1), until=now),
        "runtime_sample": metrics.RUNTIME_SAMPLE,
        "broker": broker,
        "broker_timeout": metrics.BROKER_TIMEOUT,
        "dead_letters": metrics.dead_letter_count(),
        "queued": queued,
        "queued_total": sum(queued.values()),
        "queued_url": reverse("admin:tasks_admin_taskrecord_changelist") + f"?state__exact={states.PENDING}",
        "alerts": [
            (
                alert,
                alerts.title(alert),
                subject_links(alert),
                reverse("admin:tasks_admin_alert_change", args=[alert.id]),
            )
            for alert in Alert.objects.filter(resolved_at__isnull=True).select_related("rule", "acknowledged_by")[
                :OPEN_ALERTS_SHOWN
            ]
        ],
        "alerts_url": reverse("admin:tasks_admin_alert_changelist") + "?state=open",
        "tiles": [(tile.key, tile.label(), tile.count(), tile.url()) for tile in _tiles],
        "app_url": reverse("admin:app_list", kwargs={"app_label": "tasks_admin"}),
        "history_url": reverse("admin:tasks_admin_taskrecord_changelist"),
        "dead_letters_url": reverse("admin:tasks_admin_deadletter_changelist"),
    }
    return TemplateResponse(request, "admin/tasks_admin/dashboard.html", context)
