"""The task console: task history, dead letters and the audit trail in the Django admin.

On the admin's public API and its stock templates, and fast over millions of rows (README, "At
scale"): no full COUNT(*) (a capped count instead), filters with fixed choices (no SELECT DISTINCT
over the table), no facet counts, searches that hit an index (task id, root id, order number,
registered task names), only the columns the rows show and their buttons read, what a page's tasks
are about fetched in one query per kind. The stock change list costs about 10 ms a page more than
the row renderer it replaced, and stays well under the 100 ms a page it must meet over a million
rows (docs/benchmarks.md, "Reading the figures").
"""

import json
from collections.abc import Callable
from datetime import datetime
from functools import cache, cached_property, partial

from celery import current_app, states
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext
from django_celery_results.models import TaskResult

from . import console, services, subjects
from .adminkit import (
    AccessibleAdminMixin,
    ActionPermissionMixin,
    PlainRowsMixin,
    ReadOnlyAdminMixin,
    pk_url,
    pk_urls,
    post_action,
)
from .console import Action, Offer, Outcome
from .graph import render_svg
from .models import PLANNED, SKIPPED, TASK_STATES, DeadLetter, TaskAction, TaskRecord

# Badge backgrounds under white text: each at least 4.5:1 against it (WCAG 2.2 AA contrast,
# tests/functional/test_accessibility.py).
STATE_COLOURS = {
    PLANNED: "#486581",
    SKIPPED: "#616e7c",
    states.PENDING: "#52606d",
    states.STARTED: "#8a6100",
    states.RETRY: "#c2410c",
    states.SUCCESS: "#237032",
    states.FAILURE: "#c92a2a",
    states.REVOKED: "#495057",
}
STATE_LABELS = dict(TASK_STATES)
PERMISSIONS = {
    Action.RETRY: "tasks_admin.retry_task",
    Action.REVOKE: "tasks_admin.revoke_task",
    Action.TERMINATE: "tasks_admin.terminate_task",
}
RESOLVE_PERMISSION = "tasks_admin.resolve_deadletter"
BUTTON = (
    '<button type="submit" class="button task-{}" formmethod="post" style="padding:3px 8px" title="{}" '
    'formaction="{}">{}</button>'
)


class CappedCountPaginator(Paginator):
    """Counts at most CAP rows: a full COUNT(*) over a million rows is what makes the stock admin slow."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.CAP + 1].count()


@cache
def _import_task_modules() -> None:
    """Once per process: each import has Celery's Django fix-up run Django's system checks, which
    was a fifth of the task list's time (profiled at 1,000,000 rows)."""
    current_app.loader.import_default_modules()


def shop_task_names() -> list[str]:
    """Every task the project defines, the same in every process: the task modules are imported
    first (a web process has not imported them all by itself:
    test_console_hygiene.py::test_a_fresh_web_process_filters_by_every_task_the_project_defines)."""
    _import_task_modules()
    return sorted(name for name in current_app.tasks if not name.startswith("celery."))


class TaskNameFilter(admin.SimpleListFilter):
    title = "task"
    parameter_name = "task"

    def lookups(self, request, model_admin):
        return [(name, name.rpartition(".")[2]) for name in shop_task_names()]

    def queryset(self, request, queryset):
        return queryset.filter(task_name=self.value()) if self.value() else queryset


class QueueFilter(admin.SimpleListFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [(queue.name, queue.name) for queue in settings.CELERY_TASK_QUEUES]

    def queryset(self, request, queryset):
        return queryset.filter(queue=self.value()) if self.value() else queryset


class ReasonActionForm(helpers.ActionForm):
    reason = forms.CharField(required=False, label="Reason / note", max_length=500)


def _time(value: datetime | None) -> str | None:
    """Compact in the list (the time only, for today); the full timestamp on hover. Three cells a
    row: the clock is read once, and the markup written whole (digits, letters and punctuation
    only, nothing to escape), not through format_html: 15 µs a cell before, 7 now."""
    if value is None:
        return None
    local = timezone.localtime(value)
    short = local.strftime("%H:%M:%S" if local.date() == datetime.now(local.tzinfo).date() else "%b %d %H:%M")
    return mark_safe(f'<span title="{local.isoformat(sep=" ", timespec="milliseconds")}">{short}</span>')


class TaskConsoleMixin(ActionPermissionMixin, ReadOnlyAdminMixin, PlainRowsMixin):
    """Row buttons, POST-only action views and bulk actions shared by task history and dead letters."""

    action_form = ReasonActionForm
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER  # facet counts are a COUNT per filter choice over the whole table
    show_full_result_count = False
    list_per_page = 50
    empty_value_display = "—"
    # What the rows show and their buttons read: not the arguments, result or traceback. A field an
    # owner's offers read and this leaves out is a query per row
    # (test_the_failed_tasks_page_sends_as_many_queries_for_10_rows_as_for_50).
    list_columns = (
        "task_id",
        "task_name",
        "state",
        "queue",
        "worker",
        "runtime",
        "attempts",
        "sent_at",
        "started_at",
        "finished_at",
        "exception_type",
        "exception_message",
        "subject_type",
        "subject_id",
        "resolved_at",  # the owners' offers read it: a failed task is retried until resolved
    )

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).only(*self.list_columns)

    def get_changelist_instance(self, request: HttpRequest):
        """The page, with what each of its tasks is about (an order, say): one query per kind of
        subject, not one per row."""
        changelist = super().get_changelist_instance(request)
        subjects.attach(changelist.result_list)
        return changelist

    def get_list_display(self, request: HttpRequest):
        # The row's buttons first: at the end of a dozen columns they were scrolled out of sight.
        return (self.buttons(request), *self.list_display)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return self._may(request, Action.RETRY)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return self._may(request, Action.REVOKE)

    def has_terminate_permission(self, request: HttpRequest) -> bool:
        return self._may(request, Action.TERMINATE)

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RESOLVE_PERMISSION)

    def _may(self, request: HttpRequest, action: Action) -> bool:
        return request.user.has_perm(PERMISSIONS[action])

    def get_urls(self):
        """The task actions' URLs, named after this admin's model: the task list's and the dead
        letters' buttons each post to their own admin. POST only, CSRF-checked by admin_view,
        each with its own permission."""
        view, prefix = self.admin_site.admin_view, self._url_prefix
        return [
            *(
                path(
                    f"<path:object_id>/{action}/",
                    view(post_action(PERMISSIONS[action])(partial(self.action_view, action=action))),
                    name=prefix + action,
                )
                for action in Action
            ),
            path(
                "<path:object_id>/resolve/",
                view(post_action(RESOLVE_PERMISSION)(self.resolve_view)),
                name=f"{prefix}resolve",
            ),
        ] + super().get_urls()

    @property
    def _url_prefix(self) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}_"

    # Columns

    def buttons(self, request: HttpRequest) -> Callable[[TaskRecord], str]:
        """The column of each row's buttons, made for this request: what the task's owner offers on
        it now, among the actions this user may take, each posting to this admin's own URL
        (test_console_hygiene.py::test_each_list_posts_its_row_buttons_to_its_own_admin)."""
        allowed = {action for action in Action if self._may(request, action)}
        urls = {action: pk_urls(f"admin:{self._url_prefix}{action}") for action in allowed}

        @admin.display(description="")
        def actions(record: TaskRecord) -> str:
            offers = [offer for offer in self.offered(record) if offer.action in allowed] if allowed else []
            return format_html_join(
                "",
                BUTTON,
                ((offer.action, offer.title, urls[offer.action](record.pk), offer.label) for offer in offers),
            )

        return actions

    def offered(self, record: TaskRecord) -> list[Offer]:
        """What the task's owner offers on it now (tasks_admin/console.py)."""
        return console.offers(record)

    def action_checkbox(self, obj: TaskRecord) -> str:
        """The row's checkbox, as Django's renders it, written whole: through its form widget it was
        40 µs a row, a fifth of the failed tasks' rows
        (test_console_hygiene.py::test_a_row_checkbox_is_djangos_own)."""
        label = format_html(gettext("Select this object for an action - {}"), obj)
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            obj.pk,
            label,
        )

    @admin.display(description="state", ordering="state")
    def state_badge(self, record: TaskRecord) -> str:
        return format_html(
            '<span class="task-state" style="background:{};color:#fff;padding:2px 8px;border-radius:10px;'
            'font-size:11px;white-space:nowrap">{}</span>',
            STATE_COLOURS.get(record.state, STATE_COLOURS[states.PENDING]),
            STATE_LABELS.get(record.state, record.state),
        )

    @admin.display(description="task", ordering="task_name")
    def task(self, record: TaskRecord) -> str:
        return format_html(
            '<a href="{}" title="{}">{}</a>',
            pk_url("admin:tasks_admin_taskrecord_change", record.pk),
            record.task_name,
            record.task_name.rpartition(".")[2],
        )

    @admin.display(description="about")
    def subject_link(self, record: TaskRecord) -> str | None:
        """What the task is about (an order, say), linked to its admin page."""
        subject = record.subject
        if subject is None:
            return None
        url = subjects.admin_url(subject)
        return format_html('<a href="{}" style="white-space:nowrap">{}</a>', url, subject) if url else str(subject)

    @admin.display(description="sent", ordering="sent_at")
    def sent(self, record: TaskRecord) -> str | None:
        return _time(record.sent_at)

    @admin.display(description="started", ordering="started_at")
    def started(self, record: TaskRecord) -> str | None:
        return _time(record.started_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, record: TaskRecord) -> str | None:
        return _time(record.finished_at)

    @admin.display(description="runtime", ordering="runtime")
    def runtime_display(self, record: TaskRecord) -> str | None:
        if record.runtime is None:
            return None
        return f"{record.runtime:.2f} s" if record.runtime >= 0.01 else f"{record.runtime * 1000:.1f} ms"

    # Single-task actions (get_urls: POST only, CSRF- and permission-checked before these run).

    def _act(self, request: HttpRequest, object_id: str, act: Callable[[TaskRecord, str], Outcome]) -> HttpResponse:
        record = get_object_or_404(TaskRecord, pk=object_id)
        shown = record
        try:
            outcome = act(record, request.POST.get("reason", "").strip()[:500])
        except services.ActionRefused as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, outcome.message)
            # A run sent again is shown next, once the history has it.
            shown = TaskRecord.objects.filter(task_id=outcome.new_task_id).first() or record
        return HttpResponseRedirect(reverse("admin:tasks_admin_taskrecord_change", args=[shown.pk]))

    def action_view(self, request: HttpRequest, object_id: str, action: Action) -> HttpResponse:
        def act(record: TaskRecord, reason: str) -> Outcome:
            return console.perform(action, record, user=request.user, reason=reason)

        return self._act(request, object_id, act)

    def resolve_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def act(record: TaskRecord, note: str) -> Outcome:
            if not note:
                raise services.ActionRefused("Say how it was resolved: the note is required.")
            services.resolve(record, user=request.user, note=note)
            return Outcome("Marked as resolved.")

        return self._act(request, object_id, act)

    # Bulk actions

    def _bulk(self, request: HttpRequest, queryset, act, verb: str) -> None:
        reason = request.POST.get("reason", "").strip()[:500]
        done, refused = 0, []
        # Whole rows (defer nothing): an action reads what the list leaves out, the arguments say.
        for record in queryset.defer(None)[:500]:
            try:
                act(record, reason)
                done += 1
            except services.ActionRefused as exc:
                refused.append(f"{record.task_id}: {exc}")
        if done:
            messages.success(request, f"{verb} {done} task{'s' if done != 1 else ''}.")
        for message in refused[:10]:
            messages.warning(request, message)

    def _bulk_action(self, request: HttpRequest, queryset, action: Action, verb: str) -> None:
        self._bulk(request, queryset, lambda r, why: console.perform(action, r, user=request.user, reason=why), verb)

    @admin.action(permissions=["retry"], description="Retry selected tasks (as each task's owner means it)")
    def retry_selected(self, request: HttpRequest, queryset) -> None:
        self._bulk_action(request, queryset, Action.RETRY, "Retried")

    @admin.action(permissions=["revoke"], description="Revoke selected queued tasks")
    def revoke_selected(self, request: HttpRequest, queryset) -> None:
        self._bulk_action(request, queryset, Action.REVOKE, "Revoked")

    @admin.action(permissions=["terminate"], description="Terminate selected running tasks")
    def terminate_selected(self, request: HttpRequest, queryset) -> None:
        self._bulk_action(request, queryset, Action.TERMINATE, "Asked to terminate")


@admin.register(TaskRecord)
class TaskRecordAdmin(AccessibleAdminMixin, TaskConsoleMixin, admin.ModelAdmin):
    list_display = (
        "state_badge",
        "task",
        "subject_link",
        "queue",
        "worker",
        "runtime_display",
        "attempts",
        "sent",
        "started",
        "finished",
    )
    list_filter = (
        ("state", admin.ChoicesFieldListFilter),  # the field's choices: no SELECT DISTINCT
        TaskNameFilter,
        QueueFilter,
        ("sent_at", admin.DateFieldListFilter),
        ("finished_at", admin.DateFieldListFilter),
    )
    search_fields = ("task_id",)  # the search box; get_search_results does the real work

    @property
    def search_help_text(self) -> str:
        return ", ".join(["A task id (or a workflow's root id)", "a task's name", *subjects.hints()]) + "."

    actions = ("retry_selected", "revoke_selected", "terminate_selected")

    def get_search_results(self, request, queryset, search_term: str):
        term = search_term.strip().replace("\x00", "")
        if not term:
            return queryset, False
        if found := subjects.search(term):  # an order number, say: what the apps register
            return queryset.filter(subjects.any_of(found)), False
        names = [name for name in shop_task_names() if term.lower() in name.lower()]
        if names:
            return queryset.filter(task_name__in=names), False
        return queryset.filter(Q(task_id=term) | Q(root_id=term)), False

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        record = get_object_or_404(TaskRecord.objects.select_related("retry_of", "resolved_by"), pk=object_id)
        if not self.has_view_permission(request, record):
            raise PermissionDenied
        return TemplateResponse(request, "admin/tasks_admin/taskrecord/detail.html", self._detail(request, record))

    def _detail(self, request: HttpRequest, record: TaskRecord) -> dict:
        subject = record.subject
        related = TaskRecord.objects.only("id", "task_id", "task_name", "state")
        graph = console.owner_of(record).graph(record)
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{record.task_name.rpartition('.')[2]} · {record.task_id}",
            "record": record,
            "state_label": STATE_LABELS.get(record.state, record.state),
            "state_colour": STATE_COLOURS.get(record.state),
            "args_json": json.dumps(record.args, indent=2, ensure_ascii=False),
            "kwargs_json": json.dumps(record.kwargs, indent=2, ensure_ascii=False),
            "result": TaskResult.objects.filter(task_id=record.task_id).first(),
            "parent": related.filter(task_id=record.parent_id).first() if record.parent_id else None,
            "root": related.filter(task_id=record.root_id).exclude(pk=record.pk).first() if record.root_id else None,
            "chord_callback": related.filter(task_id=record.chord_id).first() if record.chord_id else None,
            "children": list(related.filter(parent_id=record.task_id).exclude(pk=record.pk)[:50]),
            "retried_as": list(record.retried_as.all()[:20]),
            "graph": render_svg(graph, highlight=record.task_id) if graph else None,
            "audit": list(record.actions.select_related("user")[:20]),
            "offers": [offer for offer in self.offered(record) if self._may(request, offer.action)],
            "subject": subject,
            "subject_url": subjects.admin_url(subject) if subject is not None else "",
            "action_url_prefix": "admin:tasks_admin_taskrecord_",
            "can_resolve": record.state == states.FAILURE
            and not record.resolved_at
            and self.has_resolve_permission(request),
        }


class DeadLetterTaskFilter(admin.SimpleListFilter):
    title = "task"
    parameter_name = "task"

    def lookups(self, request, model_admin):
        names = DeadLetter.objects.order_by().values_list("task_name", flat=True).distinct()
        return [(name, name.rpartition(".")[2]) for name in sorted(names)]

    def queryset(self, request, queryset):
        return queryset.filter(task_name=self.value()) if self.value() else queryset


class ErrorFilter(admin.SimpleListFilter):
    title = "error"
    parameter_name = "error"

    def lookups(self, request, model_admin):
        errors = DeadLetter.objects.order_by().values_list("exception_type", flat=True).distinct()
        return [(error, error or "(none recorded)") for error in sorted(errors)]

    def queryset(self, request, queryset):
        return queryset.filter(exception_type=self.value()) if self.value() is not None else queryset


@admin.register(DeadLetter)
class DeadLetterAdmin(AccessibleAdminMixin, TaskConsoleMixin, admin.ModelAdmin):
    list_display = ("task", "exception_type", "error_message", "subject_link", "finished", "attempts")
    list_filter = (DeadLetterTaskFilter, ErrorFilter)
    actions = ("requeue_selected", "resolve_selected")

    @admin.display(description="message")
    def error_message(self, record: TaskRecord) -> str:
        return (
            (record.exception_message[:140] + "…") if len(record.exception_message) > 140 else record.exception_message
        )

    def offered(self, record: TaskRecord) -> list[Offer]:
        """A dead letter offers its owner's retry (requeue) only: it failed, nothing runs."""
        return [offer for offer in super().offered(record) if offer.action == Action.RETRY]

    def changelist_view(self, request: HttpRequest, extra_context=None):
        groups = (
            DeadLetter.objects.order_by()
            .values("task_name", "exception_type")
            .annotate(count=Count("*"))  # COUNT(id) read every row; this, the partial index alone
            .order_by("-count")[:20]
        )
        return super().changelist_view(request, {"groups": groups, **(extra_context or {})})

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        return HttpResponseRedirect(reverse("admin:tasks_admin_taskrecord_change", args=[object_id]))

    @admin.action(permissions=["retry"], description="Requeue selected (retry as each task's owner means it, audited)")
    def requeue_selected(self, request: HttpRequest, queryset) -> None:
        self._bulk_action(request, queryset, Action.RETRY, "Requeued")

    @admin.action(permissions=["resolve"], description="Resolve selected with the note")
    def resolve_selected(self, request: HttpRequest, queryset) -> None:
        if not request.POST.get("reason", "").strip():
            messages.error(request, "Write a note saying how they were resolved, then resolve.")
            return
        self._bulk(
            request,
            queryset,
            lambda r, note: services.resolve(r, user=request.user, note=note),
            "Resolved",
        )


@admin.register(TaskAction)
class TaskActionAdmin(AccessibleAdminMixin, ActionPermissionMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "kind", "user", "task_link", "about", "periodic_task_name", "reason")
    list_filter = ("kind", ("created_at", admin.DateFieldListFilter))
    list_select_related = ("user", "task")
    search_fields = ("=new_task_id", "=task__task_id", "user__username")

    @admin.display(description="about")
    def about(self, action: TaskAction) -> str:
        return str(action.subject or "—")

    @admin.display(description="task")
    def task_link(self, action: TaskAction) -> str:
        if action.task_id is None:
            return "—"
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:tasks_admin_taskrecord_change", args=[action.task_id]),
            action.task.task_name.rpartition(".")[2],
        )
