"""A record of every message the shop sends, keyed so that none is sent twice."""

from django.db import models

from tasks_admin.rowcounts import counted_field, uncounted_index


class Notification(models.Model):
    class Channel(models.TextChoices):
        EMAIL = "email"
        SMS = "sms"

    class Status(models.TextChoices):
        PENDING = "pending"  # not sent yet, or its last attempt hit a transient error
        SENT = "sent"
        FAILED = "failed"  # permanent error: the provider refused it
        CANCELLED = "cancelled"  # queued, then not to be sent: its order was cancelled first

    # The business key, e.g. "order:<id>:confirmation:sms". Delivery checks it first,
    # so a retried or redelivered task never sends the same message again.
    idempotency_key = models.CharField(max_length=150, unique=True)
    order = models.ForeignKey(
        "orders.Order", on_delete=models.CASCADE, null=True, blank=True, related_name="notifications"
    )
    channel = models.CharField(max_length=8, choices=Channel.choices)
    recipient = models.CharField(max_length=254)
    subject = models.CharField(max_length=200, blank=True)
    body = models.TextField()
    html_body = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # A lease taken before calling the provider: a duplicate delivery of the task
    # arriving while the first is still sending waits instead of sending again.
    locked_until = models.DateTimeField(null=True, blank=True, editable=False)
    provider_message_id = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # The status /metrics' tally counts the message under (tasks_admin/rowcounts.py writes it).
    counted_as = models.CharField(max_length=10, blank=True, db_default="", editable=False)
    counted = counted_field()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="notification_status_recent"),
            uncounted_index("notification_uncounted"),  # moved since the tally counted them
        ]

    def __str__(self) -> str:
        return f"{self.channel} to {self.recipient}: {self.status}"
