"""The task console: task history, dead letters and the audit trail in the Django admin.

Built to stay fast over millions of rows: no full COUNT(*) (a capped count instead),
filters with fixed choices (no SELECT DISTINCT over the table), searches that hit an
index (task id, root id, order number, registered task names), denormalised columns.
"""

import json
import threading
from functools import cached_property, partial
from html import escape

from celery import current_app, states
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django_celery_results.models import TaskResult

from . import console, services, subjects
from .changelist import TaskChangeList
from .console import Action, Offer, Outcome
from .graph import render_svg
from .models import PLANNED, SKIPPED, TASK_STATES, DeadLetter, TaskAction, TaskRecord

STATE_COLOURS = {
    PLANNED: "#bcccdc",
    SKIPPED: "#7b8794",
    states.PENDING: "#9aa5b1",
    states.STARTED: "#e0a800",
    states.RETRY: "#e8590c",
    states.SUCCESS: "#2f9e44",
    states.FAILURE: "#e03131",
    states.REVOKED: "#495057",
}
STATE_LABELS = dict(TASK_STATES)


class CappedCountPaginator(Paginator):
    """Counts at most CAP rows: a full COUNT(*) over a million rows is what makes the stock admin slow."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.CAP + 1].count()


def shop_task_names() -> list[str]:
    """Every task the project defines, the same in every process: the task modules are imported
    first (a web process has not imported them all by itself)."""
    current_app.loader.import_default_modules()
    return sorted(name for name in current_app.tasks if not name.startswith("celery."))


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return TASK_STATES

    def queryset(self, request, queryset):
        return queryset.filter(state=self.value()) if self.value() else queryset


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


_PK = "__pk__"  # a placeholder in a reversed URL, for the row's primary key


class TaskConsoleMixin:
    """Permissions, row buttons and POST-only action views shared by task history and dead letters."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._local = threading.local()  # the request being rendered, in this thread

    action_form = ReasonActionForm
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER  # facet counts are a COUNT per filter choice over the whole table
    show_full_result_count = False
    list_per_page = 50
    # Each row links to its task from the "task" column: no second link Django would reverse,
    # then resolve again to carry the filters, for every row.
    list_display_links = None
    # What the rows show and their buttons read (TaskChangeList loads only these): not the arguments,
    # result or traceback. A field an owner's offers read and this leaves out is a query per row
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

    def get_changelist(self, request: HttpRequest, **kwargs):
        return TaskChangeList

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("tasks_admin.retry_task")

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("tasks_admin.revoke_task")

    def has_terminate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("tasks_admin.terminate_task")

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("tasks_admin.resolve_deadletter")

    def get_urls(self):
        """The task actions' URLs, named after this admin's model: the task list's and the dead
        letters' buttons each post to their own admin."""
        view, prefix = self.admin_site.admin_view, self._url_prefix
        return [
            *(
                path(
                    f"<path:object_id>/{action}/", view(partial(self.action_view, action=action)), name=prefix + action
                )
                for action in Action
            ),
            path("<path:object_id>/resolve/", view(self.resolve_view), name=f"{prefix}resolve"),
        ] + super().get_urls()

    @property
    def _url_prefix(self) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}_"

    # Columns

    # Fifty rows of a dozen cells: each cell is an f-string with its data escaped, which is
    # several times cheaper than format_html's escaping of every argument.

    @admin.display(description="state", ordering="state")
    def state_badge(self, record: TaskRecord) -> str:
        return mark_safe(
            f'<span class="task-state" style="background:{STATE_COLOURS.get(record.state, "#9aa5b1")};color:#fff;'
            f'padding:2px 8px;border-radius:10px;font-size:11px;white-space:nowrap">'
            f"{escape(str(STATE_LABELS.get(record.state, record.state)))}</span>"
        )

    @admin.display(description=mark_safe('<input type="checkbox" id="action-toggle">'))
    def action_checkbox(self, record: TaskRecord) -> str:
        """The row's select box, as Django's, but written directly: rendering the widget's
        template for each row was the slowest part of the page."""
        return mark_safe(
            f'<input type="checkbox" name="{helpers.ACTION_CHECKBOX_NAME}" value="{record.pk}" '
            f'class="action-select" aria-label="Select {escape(str(record))}">'
        )

    @admin.display(description="task", ordering="task_name")
    def task(self, record: TaskRecord) -> str:
        name = escape(record.task_name)
        return mark_safe(
            f'<a href="{self._url("admin:tasks_admin_taskrecord_change", record.pk)}" title="{name}">'
            f"{name.rpartition('.')[2]}</a>"
        )

    @admin.display(description="about")
    def subject_link(self, record: TaskRecord) -> str:
        """What the task is about (an order, say), linked to its admin page."""
        subject = record.subject
        if subject is None:
            return "—"
        label = escape(str(subject))
        url = subjects.admin_url(subject)
        return mark_safe(f'<a href="{url}" style="white-space:nowrap">{label}</a>' if url else label)

    def _url(self, name: str, pk) -> str:
        """reverse(name, args=[pk]), reversed once per page: fifty rows, up to three links each.
        Primary keys are integers and order ids UUIDs: nothing in them to escape."""
        urls = self._page.setdefault("urls", {})
        if name not in urls:
            urls[name] = reverse(name, args=[_PK])
        return urls[name].replace(_PK, str(pk))

    @property
    def _page(self) -> dict:
        return self._local.page

    def _time(self, value) -> str:
        """Compact in the list (time only for today); the full timestamp on hover."""
        if value is None:
            return "—"
        zone, today = self._page.setdefault("clock", (timezone.get_current_timezone(), timezone.localdate()))
        local = value.astimezone(zone)
        short = local.strftime("%H:%M:%S" if local.date() == today else "%b %d %H:%M")
        return mark_safe(f'<span title="{local.isoformat(sep=" ", timespec="milliseconds")}">{short}</span>')

    @admin.display(description="sent", ordering="sent_at")
    def sent(self, record: TaskRecord) -> str:
        return self._time(record.sent_at)

    @admin.display(description="started", ordering="started_at")
    def started(self, record: TaskRecord) -> str:
        return self._time(record.started_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, record: TaskRecord) -> str:
        return self._time(record.finished_at)

    @admin.display(description="runtime", ordering="runtime")
    def runtime_display(self, record: TaskRecord) -> str:
        if record.runtime is None:
            return "—"
        return f"{record.runtime:.2f} s" if record.runtime >= 0.01 else f"{record.runtime * 1000:.1f} ms"

    @admin.display(description="")
    def row_actions(self, record: TaskRecord) -> str:
        return mark_safe(
            "".join(
                f'<button type="submit" class="button task-{offer.action}" formmethod="post" style="padding:3px 8px" '
                f'title="{escape(offer.title)}" '
                f'formaction="{self._url(f"admin:{self._url_prefix}{offer.action}", record.pk)}">'
                f"{escape(offer.label)}</button>"
                for offer in self._offers(record)
            )
        )

    def changelist_view(self, request: HttpRequest, extra_context=None):
        # A bulk action this user may not run is forbidden (403), not "no action selected".
        name = request.POST.get("action", "") if request.method == "POST" else ""
        if name in (self.actions or ()) and name not in self.get_actions(request):
            raise PermissionDenied
        # Per thread (one admin serves every request): the row buttons depend on the user's
        # permissions, and the rows of a page share link patterns and the clock.
        self._local.request, self._local.page = request, {}
        return super().changelist_view(request, extra_context)

    def _offers(self, record: TaskRecord, request: HttpRequest | None = None) -> list[Offer]:
        """What the task's owner offers on it now, among the actions this user may take."""
        request = request or self._local.request
        return [offer for offer in console.offers(record) if self._may(request, offer.action)]

    def _may(self, request: HttpRequest, action: Action) -> bool:
        return getattr(self, f"has_{action}_permission")(request)

    # Single-task actions: POST only, CSRF-checked by admin_view, permission-checked here.

    def _act(self, request: HttpRequest, object_id: str, allowed: bool, act) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not allowed:
            raise PermissionDenied
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

        return self._act(request, object_id, self._may(request, action), act)

    def resolve_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def act(record: TaskRecord, note: str) -> Outcome:
            if not note:
                raise services.ActionRefused("Say how it was resolved: the note is required.")
            services.resolve(record, user=request.user, note=note)
            return Outcome("Marked as resolved.")

        return self._act(request, object_id, self.has_resolve_permission(request), act)

    # Bulk actions

    def _bulk(self, request: HttpRequest, queryset, act, verb: str) -> None:
        reason = request.POST.get("reason", "").strip()[:500]
        done, refused = 0, []
        for record in queryset[:500]:
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
class TaskRecordAdmin(TaskConsoleMixin, admin.ModelAdmin):
    # The row's buttons first: at the end of twelve columns they were scrolled out of sight.
    list_display = (
        "row_actions",
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
        StateFilter,
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
            "offers": self._offers(record, request),
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
class DeadLetterAdmin(TaskConsoleMixin, admin.ModelAdmin):
    list_display = ("row_actions", "task", "exception_type", "error_message", "subject_link", "finished", "attempts")
    list_filter = (DeadLetterTaskFilter, ErrorFilter)
    actions = ("requeue_selected", "resolve_selected")

    @admin.display(description="message")
    def error_message(self, record: TaskRecord) -> str:
        return (
            (record.exception_message[:140] + "…") if len(record.exception_message) > 140 else record.exception_message
        )

    def _offers(self, record: TaskRecord, request: HttpRequest | None = None) -> list[Offer]:
        """A dead letter offers its owner's retry (requeue) only: it failed, nothing runs."""
        return [offer for offer in super()._offers(record, request) if offer.action == Action.RETRY]

    def changelist_view(self, request: HttpRequest, extra_context=None):
        groups = (
            DeadLetter.objects.order_by()
            .values("task_name", "exception_type")
            .annotate(count=Count("id"))
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
class TaskActionAdmin(admin.ModelAdmin):
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
