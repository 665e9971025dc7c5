"""Business alerts in the admin: alerts read-only but for acknowledging one (its own permission,
POST only), and the rules' settings — enabled, threshold, window — edited, none added or deleted
(the rules are code: tasks_admin/alerts.py). Proved by tests/functional/test_alerts_admin.py and
tests/unit/test_alerts.py (acknowledging and its permission)."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from . import alerts
from .adminkit import AccessibleAdminMixin, ReadOnlyAdminMixin, ReadOnlyInline, post_action
from .models import Alert, AlertNotice, AlertRule

ACKNOWLEDGE_PERMISSION = "tasks_admin.acknowledge_alert"


def subject_links(alert: Alert) -> str:
    """Links to what the alert is about (orders, tasks, jobs) and to the list that shows the cause."""
    links = [(url, name) for name, url in alerts.concerned(alert)]
    html = format_html_join(", ", '<a href="{}">{}</a>', links) if links else ""
    if alert.link:
        html = format_html('{} <a href="{}">(list)</a>', html, alert.link)
    return html or "—"


class AcknowledgeForm(forms.Form):
    note = forms.CharField(required=False, max_length=1000, widget=forms.Textarea(attrs={"rows": 2}))


class OpenFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("open", "open"), ("unacknowledged", "open, not acknowledged"), ("resolved", "resolved")]

    def queryset(self, request, queryset):
        if self.value() == "open":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "unacknowledged":
            return queryset.filter(resolved_at__isnull=True, acknowledged_at__isnull=True)
        if self.value() == "resolved":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


class NoticeInline(ReadOnlyInline):
    """Whether each transition reached each channel: sent when, after how many attempts, the last error."""

    model = AlertNotice
    fields = ("transition", "channel", "created_at", "sent_at", "attempts", "error")
    verbose_name_plural = "notices"


@admin.register(Alert)
class AlertAdmin(AccessibleAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    inlines = (NoticeInline,)
    change_form_template = "admin/tasks_admin/alert/change_form.html"
    list_display = ("title", "subject_key", "summary", "opened_at", "last_seen_at", "resolved_at", "acknowledged")
    list_filter = (OpenFilter, "rule")
    list_select_related = ("rule", "acknowledged_by")
    fields = (
        "title",
        "subject_key",
        "summary",
        "value",
        "concerns",
        "opened_at",
        "last_seen_at",
        "resolved_at",
        "acknowledged_at",
        "acknowledged_by",
        "acknowledgement_note",
    )
    readonly_fields = fields

    @admin.display(description="alert")
    def title(self, alert: Alert) -> str:
        return alerts.title(alert)

    @admin.display(description="about")
    def concerns(self, alert: Alert) -> str:
        return subject_links(alert)

    @admin.display(description="acknowledged")
    def acknowledged(self, alert: Alert) -> str:
        if not alert.acknowledged_at:
            return "—"
        return f"{alert.acknowledged_by or 'someone'}, {alert.acknowledged_at:%Y-%m-%d %H:%M}"

    def get_urls(self):
        view = self.admin_site.admin_view(post_action(ACKNOWLEDGE_PERMISSION)(self.acknowledge_view))
        return [path("<path:object_id>/acknowledge/", view, name="tasks_admin_alert_acknowledge"), *super().get_urls()]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        context = {
            **(extra_context or {}),
            "can_acknowledge": request.user.has_perm(ACKNOWLEDGE_PERMISSION),
            "acknowledge_form": AcknowledgeForm(),
        }
        return super().change_view(request, object_id, form_url, context)

    def acknowledge_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        alert = self.get_object(request, unquote(object_id))
        if alert is None:
            raise Http404("No such alert.")
        form = AcknowledgeForm(request.POST)
        url = reverse("admin:tasks_admin_alert_change", args=[alert.pk])
        if not form.is_valid():
            self.message_user(request, "The note is too long (1000 characters at most).", messages.ERROR)
        elif alerts.acknowledge(alert, user=request.user, note=form.cleaned_data["note"]):
            self.message_user(request, f"Acknowledged: {alerts.title(alert)}.", messages.SUCCESS)
        else:
            self.message_user(request, "Someone acknowledged this alert already.", messages.WARNING)
        return HttpResponseRedirect(url)


@admin.register(AlertRule)
class AlertRuleAdmin(AccessibleAdminMixin, admin.ModelAdmin):
    list_display = ("key", "title", "enabled", "threshold", "unit", "window_minutes", "updated_at")
    list_editable = ("enabled", "threshold")  # the window on the change page: not every rule has one
    fields = ("key", "title", "description", "enabled", "threshold", "unit", "window_minutes")
    readonly_fields = ("key", "title", "description", "unit")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a rule is code; its row is made when it is first evaluated

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="rule")
    def title(self, row: AlertRule) -> str:
        rule = alerts.rule_for(row.key)
        return rule.title if rule else "(no longer registered)"

    @admin.display(description="what it measures")
    def description(self, row: AlertRule) -> str:
        rule = alerts.rule_for(row.key)
        return rule.help if rule else ""

    @admin.display(description="unit of the threshold")
    def unit(self, row: AlertRule) -> str:
        rule = alerts.rule_for(row.key)
        return rule.unit if rule else ""

    def get_readonly_fields(self, request: HttpRequest, obj: AlertRule | None = None):
        rule = alerts.rule_for(obj.key) if obj else None
        if rule is not None and rule.default_window_minutes is None:
            return (*self.readonly_fields, "window_minutes")  # this rule has no window
        return self.readonly_fields

    def changelist_view(self, request: HttpRequest, extra_context=None):
        alerts.rule_rows()  # every registered rule listed, even before the job first ran
        return super().changelist_view(request, extra_context)
