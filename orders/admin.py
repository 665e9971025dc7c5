from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse

from notifications.models import Notification
from tasks_admin.adminkit import (
    AccessibleAdminMixin,
    ActionPermissionMixin,
    ReadOnlyAdminMixin,
    ReadOnlyInline,
    post_action,
)
from tasks_admin.graph import render_svg

from . import cancellation, console, lifecycle
from .errors import CheckoutError, OrderActionRefused
from .graph import order_graph
from .models import DemoGatewayCharge, Order, OrderEvent, OrderLine, Payment, SalesReport, Shipment, WorkflowStep
from .selectors import stuck_orders

# Customer details staff may correct (a mistyped phone number before a message is sent again);
# each change is recorded in the order's audit trail with its old and new value.
CONTACT_FIELDS = ("customer_name", "email", "phone", "shipping_address")
CONTINUE_PERMISSION = "tasks_admin.continue_workflow"
CANCEL_PERMISSION = "orders.cancel_order"


class OrderLineInline(ReadOnlyInline):
    model = OrderLine
    fields = ("sku", "name", "unit_price", "quantity")


class WorkflowStepInline(ReadOnlyInline):
    model = WorkflowStep
    fields = ("position", "name", "state", "task_id", "finished_at", "error")
    ordering = ("position",)


class OrderEventInline(ReadOnlyInline):
    model = OrderEvent
    fields = ("at", "kind", "from_status", "to_status", "actor", "note", "changes")
    verbose_name_plural = "audit trail"


class PaymentInline(ReadOnlyInline):
    model = Payment
    fields = ("amount", "status", "card_last4", "gateway_reference", "error", "captured_at", "refunded_at")


class ShipmentInline(ReadOnlyInline):
    model = Shipment
    fields = ("reference", "status", "created_at")


class NotificationInline(ReadOnlyInline):
    model = Notification
    fields = ("channel", "recipient", "status", "attempts", "sent_at", "error")


class WorkflowFilter(admin.SimpleListFilter):
    title = "workflow"
    parameter_name = "workflow"

    def lookups(self, request, model_admin):
        return [("stuck", f"stuck (no progress for {settings.STUCK_WORKFLOW_MINUTES:g} min)")]

    def queryset(self, request, queryset):
        if self.value() == "stuck":
            return queryset.filter(pk__in=stuck_orders(settings.STUCK_WORKFLOW_MINUTES).values("pk"))
        return queryset


@admin.register(Order)
class OrderAdmin(AccessibleAdminMixin, ActionPermissionMixin, admin.ModelAdmin):
    list_display = ("number", "customer_name", "email", "total", "status", "created_at", "updated_at")
    list_filter = ("status", WorkflowFilter, ("created_at", admin.DateFieldListFilter))
    search_fields = ("=number", "email", "customer_name")
    readonly_fields = (
        "number",
        "status",
        "total",
        "failure_reason",
        "sales_recorded_at",
        "stock_released_at",
        "created_at",
        "updated_at",
    )
    fields = (
        ("number", "status"),
        ("customer_name", "email", "phone"),
        "shipping_address",
        ("total", "failure_reason"),
        ("created_at", "updated_at", "sales_recorded_at", "stock_released_at"),
    )
    inlines = (
        OrderLineInline,
        WorkflowStepInline,
        PaymentInline,
        ShipmentInline,
        NotificationInline,
        OrderEventInline,
    )
    show_full_result_count = False
    change_form_template = "admin/orders/order/change_form.html"

    def has_add_permission(self, request) -> bool:
        return False  # orders are placed through checkout, which reserves stock and starts the workflow

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # an order is money and stock: it is cancelled through its state machine, never deleted

    def save_model(self, request: HttpRequest, obj: Order, form, change: bool) -> None:
        """Only the contact fields are editable, and only they are written: the whole row saved
        wrote back the status as loaded over the workflow's moves since (test_a_contact_edit_
        writes_the_contact_only_not_the_status_the_workflow_moved_on). Each change is audited
        with its old value."""
        changes = {field: [form.initial.get(field), form.cleaned_data[field]] for field in form.changed_data}
        if changes:
            obj.save(update_fields=[*changes, "updated_at"])
            OrderEvent.objects.create(
                order=obj,
                kind="contact_changed",
                user=request.user,
                actor=f"staff:{request.user.get_username()}",
                changes=changes,
            )

    def get_urls(self):
        view = self.admin_site.admin_view(post_action(CONTINUE_PERMISSION)(self.continue_workflow_view))
        cancel = self.admin_site.admin_view(post_action(CANCEL_PERMISSION)(self.cancel_view))
        return [
            path("<path:object_id>/continue/", view, name="orders_order_continue"),
            path("<path:object_id>/cancel/", cancel, name="orders_order_cancel"),
        ] + super().get_urls()

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        order = self.get_object(request, object_id)
        extra = {
            "workflow_graph": render_svg(order_graph(order)) if order else None,
            "can_continue": order is not None
            and order.status not in (Order.Status.CONFIRMED, Order.Status.CANCELLING, Order.Status.CANCELLED)
            and request.user.has_perm(CONTINUE_PERMISSION),
            "can_cancel": order is not None
            and cancellation.offered(order)
            and request.user.has_perm(CANCEL_PERMISSION),
        }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def continue_workflow_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Re-run the order's failed (or never run) steps and the rest of its canvas (get_urls: POST
        only, with its permission)."""
        order = get_object_or_404(Order, pk=object_id)
        try:
            steps = console.continue_order(order, user=request.user, reason=request.POST.get("reason", "")[:500])
        except (OrderActionRefused, CheckoutError) as exc:
            messages.error(request, str(exc))
        else:
            messages.success(
                request, f"Continued the workflow of {order.number}: {', '.join(steps) or 'nothing to run'}."
            )
        return HttpResponseRedirect(reverse("admin:orders_order_change", args=[order.pk]))

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Cancel and refund the order through the cancellation workflow (get_urls: POST only, with
        its own permission); audited on the order: who, when, and the reason, which is required."""
        order = get_object_or_404(Order, pk=object_id)
        reason = request.POST.get("reason", "").strip()[:500]
        if not reason:
            messages.error(request, "Give the reason for cancelling: it is kept in the order's audit trail.")
        else:
            try:
                started = cancellation.request(
                    order.pk, actor=lifecycle.staff(request.user), user=request.user, note=reason
                )
            except OrderActionRefused as exc:
                messages.error(request, str(exc))
            else:
                done = "is being cancelled and refunded" if started else "was being cancelled already"
                messages.success(request, f"Order {order.number} {done}: the workflow's graph shows its progress.")
        return HttpResponseRedirect(reverse("admin:orders_order_change", args=[order.pk]))


@admin.register(DemoGatewayCharge)
class DemoGatewayChargeAdmin(AccessibleAdminMixin, ActionPermissionMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """The demo gateway's ledger: a charge's idempotency key charges once, so no row is deleted either."""

    list_display = (
        "reference",
        "idempotency_key",
        "amount",
        "requests",
        "refunded_at",
        "refund_requests",
        "created_at",
    )
    search_fields = ("=reference", "idempotency_key")


@admin.register(SalesReport)
class SalesReportAdmin(AccessibleAdminMixin, ActionPermissionMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Written by the daily sales report job (orders/reports.py); read-only here."""

    list_display = ("day", "orders", "units", "revenue", "generated_at")
    date_hierarchy = "day"
