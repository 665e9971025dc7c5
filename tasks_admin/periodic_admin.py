"""django-celery-beat's periodic task admin, with an audited, permission-checked "Run now".

The stock "Run selected tasks" action sends tasks for anyone who can see the list,
and leaves no trace. Here running needs tasks_admin.run_periodic_task, goes through
tasks_admin.services.run_periodic_task_now (audit record, admin log entry, last run
updated), and the change page also has a "Run now" button (POST only), the task's
recent runs from the task history and a preview of its next run times.
"""

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import NoReverseMatch, path, reverse
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import PeriodicTask

from . import services
from .adminkit import AccessibleAdminMixin, ActionPermissionMixin, post_action
from .models import TaskRecord
from .periodic import next_run_times

RECENT_RUNS = 20
RUN_PERMISSION = "tasks_admin.run_periodic_task"

admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(AccessibleAdminMixin, ActionPermissionMixin, beat_admin.PeriodicTaskAdmin):
    change_form_template = "admin/tasks_admin/periodictask/change_form.html"

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RUN_PERMISSION)

    # The stock actions need no permission at all: staff who may only view could switch
    # tasks on and off. Switching now needs the change permission...
    @admin.action(permissions=["change"], description="Enable selected tasks")
    def enable_tasks(self, request: HttpRequest, queryset) -> None:
        super().enable_tasks(request, queryset)

    @admin.action(permissions=["change"], description="Disable selected tasks")
    def disable_tasks(self, request: HttpRequest, queryset) -> None:
        super().disable_tasks(request, queryset)

    @admin.action(permissions=["change"], description="Toggle activity of selected tasks")
    def toggle_tasks(self, request: HttpRequest, queryset) -> None:
        super().toggle_tasks(request, queryset)

    # ...and running replaces the stock action of the same name (no check, no audit).
    @admin.action(permissions=["run"], description="Run selected periodic tasks now")
    def run_tasks(self, request: HttpRequest, queryset) -> None:
        for periodic_task in queryset:
            self._run(request, periodic_task)

    def get_urls(self):
        view = self.admin_site.admin_view(post_action(RUN_PERMISSION)(self.run_now_view))
        return [path("<path:object_id>/run/", view, name="django_celery_beat_periodictask_run")] + super().get_urls()

    def run_now_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST only, with the run permission (get_urls); and only on a task this user may see."""
        periodic_task = self.get_object(request, unquote(object_id))
        if not self.has_view_or_change_permission(request, periodic_task):
            raise PermissionDenied
        if periodic_task is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        self._run(request, periodic_task)
        return HttpResponseRedirect(reverse("admin:django_celery_beat_periodictask_change", args=[periodic_task.pk]))

    def _run(self, request: HttpRequest, periodic_task: PeriodicTask) -> None:
        try:
            task_id = services.run_periodic_task_now(periodic_task, user=request.user)
        except services.ActionRefused as exc:
            self.message_user(request, f"{periodic_task.name}: {exc}", messages.ERROR)
        else:
            self.message_user(request, f"{periodic_task.name} was sent as task {task_id}.", messages.SUCCESS)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        periodic_task = self.get_object(request, unquote(object_id))
        extra = {"can_run": self.has_run_permission(request)}
        if periodic_task is not None:
            extra.update(
                recent_runs=_recent_runs(periodic_task),
                next_runs=next_run_times(periodic_task),
                clocked_time=periodic_task.clocked.clocked_time if periodic_task.clocked_id else None,
            )
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})


def _recent_runs(periodic_task: PeriodicTask) -> list[dict]:
    records = TaskRecord.objects.filter(periodic_task_name=periodic_task.name).order_by("-id")[:RECENT_RUNS]
    return [{"record": record, "url": _record_url(record)} for record in records]


def _record_url(record: TaskRecord) -> str | None:
    try:
        return reverse("admin:tasks_admin_taskrecord_change", args=[record.pk])
    except NoReverseMatch:
        return None
