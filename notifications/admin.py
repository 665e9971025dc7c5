from django.contrib import admin

from tasks_admin.adminkit import AccessibleAdminMixin, ActionPermissionMixin, ReadOnlyAdminMixin

from .models import Notification


@admin.register(Notification)
class NotificationAdmin(AccessibleAdminMixin, ActionPermissionMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every message's record, its idempotency key included: a deleted one could be sent again."""

    list_display = ("created_at", "channel", "recipient", "subject", "status", "attempts", "order", "sent_at")
    list_filter = ("channel", "status")
    list_select_related = ("order",)
    search_fields = ("recipient", "=idempotency_key", "=order__number")
    show_full_result_count = False
