from django.contrib import admin

from notifications.models import Notification

from .models import DemoGatewayCharge, Order, OrderLine, Payment, Shipment, WorkflowStep


class ReadOnlyInline(admin.TabularInline):
    """Rows the workflow writes; the admin shows them and never edits them."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class OrderLineInline(ReadOnlyInline):
    model = OrderLine
    fields = ("sku", "name", "unit_price", "quantity")


class WorkflowStepInline(ReadOnlyInline):
    model = WorkflowStep
    fields = ("position", "name", "state", "attempts", "task_id", "started_at", "finished_at", "error")
    ordering = ("position",)


class PaymentInline(ReadOnlyInline):
    model = Payment
    fields = ("amount", "status", "card_last4", "gateway_reference", "error", "captured_at")


class ShipmentInline(ReadOnlyInline):
    model = Shipment
    fields = ("reference", "status", "created_at")


class NotificationInline(ReadOnlyInline):
    model = Notification
    fields = ("channel", "recipient", "status", "attempts", "sent_at", "error")


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ("number", "customer_name", "email", "total", "status", "created_at", "updated_at")
    list_filter = ("status", ("created_at", admin.DateFieldListFilter))
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
    inlines = (OrderLineInline, WorkflowStepInline, PaymentInline, ShipmentInline, NotificationInline)
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False  # orders are placed through checkout, which reserves stock and starts the workflow


@admin.register(DemoGatewayCharge)
class DemoGatewayChargeAdmin(admin.ModelAdmin):
    list_display = ("reference", "idempotency_key", "amount", "requests", "created_at")
    search_fields = ("=reference", "idempotency_key")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
