"""Orders, their lines, payment, shipment and the record of their Celery workflow."""

import secrets
import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.urls import reverse

from shop.models import Product
from tasks_admin.rowcounts import counted_field, uncounted_index

validate_e164 = RegexValidator(
    r"\A\+[1-9][0-9]{6,14}\Z",  # ASCII digits only
    "Enter the phone number in international format: + and country code, e.g. +44 20 7946 0958.",
)

_NUMBER_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


def new_order_number() -> str:
    code = "".join(secrets.choice(_NUMBER_ALPHABET) for _ in range(10))
    return f"SO-{code[:5]}-{code[5:]}"


class Order(models.Model):
    """A customer's order. Its status changes only through orders/lifecycle.py (the state machine),
    and the database refuses any other change (migration 0005's trigger). Whoever else writes an
    order writes its own fields only (update(), or save(update_fields=...): orders/admin.py), never
    the whole row as loaded: that wrote back a status the workflow had moved on since."""

    class Status(models.TextChoices):
        PENDING = "pending"  # placed, stock reserved; the charge is queued
        PROCESSING = "processing"  # the charge is at the payment gateway
        PAID = "paid"  # payment captured: the commit point; shipment and sales follow
        CONFIRMED = "confirmed"  # paid, shipment created, sales counted; the customer is told
        ON_HOLD = "on_hold", "on hold"  # paid, but a step failed for good or staff held it: staff act
        CANCELLING = "cancelling"  # the customer or staff cancelled it: refund, stock and messages follow
        CANCELLED = "cancelled"  # stopped before any charge; stock released, customer told
        FAILED = "failed"  # the charge failed for good (not declined); stock released, customer told

    # The workflow moves these on by itself; the recovery job sends on those that stopped moving.
    ACTIVE_STATUSES = (Status.PENDING, Status.PROCESSING, Status.PAID)
    # Nothing more happens to these unless staff act.
    FINAL_STATUSES = (Status.CONFIRMED, Status.CANCELLED, Status.FAILED)
    # Stock is taken off sale for these (reserved, or sold once confirmed).
    HOLDING_STOCK = (Status.PENDING, Status.PROCESSING, Status.PAID, Status.CONFIRMED, Status.ON_HOLD)
    # A customer (or staff) may cancel these, unless a shipment exists (orders/cancellation.py). A
    # failed order too: its stock is released already (not twice), and the cancellation asks the
    # gateway by the charge's key, so a charge that went through after all is refunded, once.
    CANCELLABLE = (Status.PENDING, Status.PAID, Status.ON_HOLD, Status.FAILED)

    # A random id: the order page and API are reachable by whoever holds the link.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    number = models.CharField(max_length=20, unique=True, default=new_order_number, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    customer_name = models.CharField(max_length=200)
    email = models.EmailField()
    phone = models.CharField(max_length=16, validators=[validate_e164], help_text="E.164, e.g. +442079460958")
    shipping_address = models.TextField()
    total = models.DecimalField(max_digits=12, decimal_places=2)
    failure_reason = models.CharField(max_length=500, blank=True)
    # Business-key guards that make workflow steps idempotent: each is set once, by
    # a conditional UPDATE, in the same transaction as the change it guards.
    sales_recorded_at = models.DateTimeField(null=True, blank=True, editable=False)
    stock_released_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The status /metrics' tally counts the order under (tasks_admin/rowcounts.py writes it).
    counted_as = models.CharField(max_length=16, blank=True, db_default="", editable=False)
    counted = counted_field()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["-created_at"], name="order_recent"),
            models.Index(fields=["status", "updated_at"], name="order_status_updated"),
            uncounted_index("order_uncounted"),  # moved since the tally counted them
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(
                    status__in=[
                        "pending",
                        "processing",
                        "paid",
                        "confirmed",
                        "on_hold",
                        "cancelling",
                        "cancelled",
                        "failed",
                    ]
                ),
                name="order_status_known",
            )
        ]
        permissions = [("cancel_order", "Can cancel and refund an order (the cancellation workflow)")]

    def __str__(self) -> str:
        return self.number

    def get_absolute_url(self) -> str:
        return reverse("orders:order_detail", args=[self.pk])

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINAL_STATUSES


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="order_lines")
    sku = models.CharField("SKU", max_length=32)
    name = models.CharField(max_length=200)
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)
    quantity = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["order", "product"], name="orderline_unique_product"),
            models.CheckConstraint(condition=models.Q(quantity__gt=0), name="orderline_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} × {self.name}"

    @property
    def line_total(self):
        return self.unit_price * self.quantity


class WorkflowStep(models.Model):
    """A fulfilment step of an order's workflow: the task id it runs under now, and its outcome.

    The outcome is written by the step itself (orders/steps.py) before its task returns, so an
    order is never confirmed next to an unsettled step (tests/integration/test_order_safety.py).
    How the current run is going — queued, running, retrying, its attempts — is the task
    history's fact (tasks_admin.TaskRecord), not repeated here.
    """

    class State(models.TextChoices):
        PENDING = "PENDING", "to do"  # not settled: waiting, queued, running or retrying
        SUCCESS = "SUCCESS", "done"
        FAILURE = "FAILURE", "failed"
        SKIPPED = "SKIPPED", "not run"  # the order stopped before it (the note says why)

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=50)
    position = models.PositiveSmallIntegerField()
    task_id = models.CharField(max_length=255, db_index=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="Why it failed, or why it was not run")
    # Counted into StepTally (orders/tally.py). Each write that settles the step writes False
    # with it (orders/services.py): a step settled again, a failure that later succeeded, say,
    # is counted again.
    tallied = models.BooleanField(default=False)

    class Meta:
        ordering = ["order", "position"]
        constraints = [models.UniqueConstraint(fields=["order", "name"], name="workflowstep_unique_name")]
        indexes = [
            # The settlements /metrics has not counted into its tally yet: the last scrape's worth.
            models.Index(
                fields=["id"],
                condition=~models.Q(state="PENDING") & models.Q(tallied=False),
                name="workflowstep_untallied",
            )
        ]

    def __str__(self) -> str:
        return f"{self.order} · {self.name}: {self.state}"


class StepTally(models.Model):
    """Workflow steps settled so far, by step and outcome: /metrics' shop_order_steps_total
    (orders/tally.py)."""

    name = models.CharField(max_length=50)
    state = models.CharField(max_length=16)
    settled = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "state"], name="steptally_one_per_outcome")]

    def __str__(self) -> str:
        return f"{self.name} {self.state}: {self.settled}"


class OrderEvent(models.Model):
    """The order's audit trail: every change made by a person or a periodic job (who, when, why),
    and every time the workflow stopped. The workflow's own happy-path moves are in the task
    history."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    kind = models.CharField(max_length=40, help_text="A transition's name (orders/lifecycle.py), or contact_changed")
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.CharField(max_length=100, help_text="staff:<username>, job:<task>, workflow:<step>")
    note = models.TextField(blank=True)
    changes = models.JSONField(default=dict, blank=True, help_text='{"field": [old, new]}')

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["order", "-at"], name="orderevent_order")]

    def __str__(self) -> str:
        return f"{self.order} {self.kind} by {self.actor}"


class Payment(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        CAPTURED = "captured"
        DECLINED = "declined"
        REFUNDED = "refunded"  # captured, then refunded by the cancellation workflow
        VOIDED = "voided"  # cancelled before any charge: nothing will be taken

    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="payment")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    # The gateway's token for the card; the shop never stores the card number.
    card_token = models.CharField(max_length=64)
    card_last4 = models.CharField(max_length=4)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Sent with every charge request: the gateway charges a key at most once.
    idempotency_key = models.CharField(max_length=100, unique=True)
    gateway_reference = models.CharField(max_length=100, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    captured_at = models.DateTimeField(null=True, blank=True)
    refunded_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.amount} on card •••• {self.card_last4}: {self.status}"


class Shipment(models.Model):
    class Status(models.TextChoices):
        READY = "ready"
        CANCELLED = "cancelled"

    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="shipment")
    reference = models.CharField(max_length=32, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.reference


class DemoGatewayCharge(models.Model):
    """The demo payment provider's own ledger — stands in for the provider's side, not the shop's.

    Like a real gateway, it keeps one charge per idempotency key, so a charge request
    repeated after a crash returns the first charge instead of charging again.
    """

    idempotency_key = models.CharField(max_length=100, unique=True)
    reference = models.CharField(max_length=40, unique=True)
    card_token = models.CharField(max_length=64)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    requests = models.PositiveIntegerField(default=1, help_text="Charge requests received for this key")
    created_at = models.DateTimeField(auto_now_add=True)
    # A charge is refunded at most once, however often the refund is asked for.
    refunded_at = models.DateTimeField(null=True, blank=True)
    refund_requests = models.PositiveIntegerField(db_default=0, help_text="Refund requests received for this charge")

    class Meta:
        verbose_name = "demo gateway charge"

    def __str__(self) -> str:
        return self.reference


class SalesReport(models.Model):
    """One day's confirmed orders, added up by a chord over chunks of them (orders/reports.py)."""

    day = models.DateField(unique=True, help_text="UTC day the orders were placed")
    orders = models.PositiveIntegerField()
    units = models.PositiveIntegerField()
    revenue = models.DecimalField(max_digits=14, decimal_places=2)
    top_products = models.JSONField(default=list, blank=True, help_text='[{"sku", "name", "units"}], most sold first')
    generated_at = models.DateTimeField()
    task_id = models.CharField(max_length=255, blank=True, help_text="The task that stored it")

    class Meta:
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"Sales on {self.day}"


class RateCounter(models.Model):
    """Hits of one rate-limit key in one fixed time window (orders/ratelimit.py). A table, not the
    cache: every gunicorn worker and host shares it without a shared cache server."""

    key = models.CharField(max_length=200)
    window_start = models.BigIntegerField(help_text="The window's start, in seconds since the epoch")
    hits = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["key", "window_start"], name="ratecounter_unique_window")]
        indexes = [models.Index(fields=["window_start"], name="ratecounter_window")]

    def __str__(self) -> str:
        return f"{self.key} @ {self.window_start}: {self.hits}"
