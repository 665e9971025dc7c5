"""Orders, their lines, payment, shipment and the record of their Celery workflow."""

import secrets
import uuid

from celery import states
from django.core.validators import RegexValidator
from django.db import models
from django.urls import reverse

from shop.models import Product

validate_e164 = RegexValidator(
    r"\A\+[1-9][0-9]{6,14}\Z",  # ASCII digits only
    "Enter the phone number in international format: + and country code, e.g. +44 20 7946 0958.",
)

_NUMBER_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


def new_order_number() -> str:
    code = "".join(secrets.choice(_NUMBER_ALPHABET) for _ in range(10))
    return f"SO-{code[:5]}-{code[5:]}"


class Order(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"  # placed; its workflow is queued
        PROCESSING = "processing"  # a worker has started the workflow
        CONFIRMED = "confirmed"  # paid, shipment created, customer notified
        FAILED = "failed"  # a step failed for good; stock released, staff must act
        CANCELLED = "cancelled"  # payment declined (or cancelled by staff); stock released

    ACTIVE_STATUSES = (Status.PENDING, Status.PROCESSING)

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

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["-created_at"], name="order_recent"),
            models.Index(fields=["status", "updated_at"], name="order_status_updated"),
        ]

    def __str__(self) -> str:
        return self.number

    def get_absolute_url(self) -> str:
        return reverse("orders:order_detail", args=[self.pk])

    @property
    def is_finished(self) -> bool:
        return self.status not in self.ACTIVE_STATUSES


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
    """One task of an order's Celery workflow: which task id runs it and how it went."""

    STATE_CHOICES = [(s, s) for s in (states.PENDING, states.STARTED, states.RETRY, states.SUCCESS, states.FAILURE)]

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=50)
    position = models.PositiveSmallIntegerField()
    task_id = models.CharField(max_length=255, db_index=True)
    state = models.CharField(max_length=16, choices=STATE_CHOICES, default=states.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["order", "position"]
        constraints = [models.UniqueConstraint(fields=["order", "name"], name="workflowstep_unique_name")]

    def __str__(self) -> str:
        return f"{self.order} · {self.name}: {self.state}"


class Payment(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        CAPTURED = "captured"
        DECLINED = "declined"

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
