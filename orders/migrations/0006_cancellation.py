"""The cancellation workflow's states and records, and the rate limits' counters.

- Order: the `cancelling` status (in its CHECK constraint), the cancel_order permission;
- Payment: refunded/voided, refunded_at; the demo gateway's ledger: refunds, at most once a charge;
- RateCounter: fixed-window hit counters shared by every web process (orders/ratelimit.py);
- the transition trigger of 0005 rebuilt with the new pairs (request_cancel, finish_cancel).
"""

import importlib

from django.db import migrations, models

previous = importlib.import_module("orders.migrations.0005_order_transition_trigger")

# lifecycle.ALLOWED_PAIRS when this migration was written (tests/unit/test_lifecycle.py compares).
ALLOWED = sorted(
    [
        *previous.ALLOWED,
        ("pending", "cancelling"),
        ("paid", "cancelling"),
        ("on_hold", "cancelling"),
        ("cancelling", "cancelled"),
    ]
)




def _replace_trigger(schema_editor, pairs: list[tuple[str, str]]) -> None:
    """0005's trigger, dropped and created again accepting `pairs`."""
    listed = ", ".join(f"'{a}>{b}'" for a, b in pairs)
    previous.drop(None, schema_editor)
    create_sql = {"postgresql": previous.POSTGRESQL, "sqlite": previous.SQLITE}
    previous._run(schema_editor, {vendor: sql.replace(previous.PAIRS, listed) for vendor, sql in create_sql.items()})


def create(apps, schema_editor) -> None:
    _replace_trigger(schema_editor, ALLOWED)


def restore(apps, schema_editor) -> None:
    _replace_trigger(schema_editor, previous.ALLOWED)


STATUSES = ["pending", "processing", "paid", "confirmed", "on_hold", "cancelling", "cancelled", "failed"]


class Migration(migrations.Migration):
    dependencies = [("orders", "0005_order_transition_trigger")]

    operations = [
        migrations.RemoveConstraint(model_name="order", name="order_status_known"),
        migrations.AlterField(
            model_name="order",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("processing", "Processing"),
                    ("paid", "Paid"),
                    ("confirmed", "Confirmed"),
                    ("on_hold", "on hold"),
                    ("cancelling", "Cancelling"),
                    ("cancelled", "Cancelled"),
                    ("failed", "Failed"),
                ],
                default="pending",
                max_length=16,
            ),
        ),
        migrations.AddConstraint(
            model_name="order",
            constraint=models.CheckConstraint(condition=models.Q(status__in=STATUSES), name="order_status_known"),
        ),
        migrations.AlterModelOptions(
            name="order",
            options={
                "ordering": ["-created_at"],
                "permissions": [("cancel_order", "Can cancel and refund an order (the cancellation workflow)")],
            },
        ),
        migrations.AlterField(
            model_name="payment",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("captured", "Captured"),
                    ("declined", "Declined"),
                    ("refunded", "Refunded"),
                    ("voided", "Voided"),
                ],
                default="pending",
                max_length=16,
            ),
        ),
        migrations.AddField(model_name="payment", name="refunded_at", field=models.DateTimeField(blank=True, null=True)),
        migrations.AddField(
            model_name="demogatewaycharge", name="refunded_at", field=models.DateTimeField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="demogatewaycharge",
            name="refund_requests",
            field=models.PositiveIntegerField(db_default=0, help_text="Refund requests received for this charge"),
        ),
        migrations.CreateModel(
            name="RateCounter",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("key", models.CharField(max_length=200)),
                (
                    "window_start",
                    models.BigIntegerField(help_text="The window's start, in seconds since the epoch"),
                ),
                ("hits", models.PositiveIntegerField(default=0)),
            ],
            options={
                "indexes": [models.Index(fields=["window_start"], name="ratecounter_window")],
                "constraints": [models.UniqueConstraint(fields=("key", "window_start"), name="ratecounter_unique_window")],
            },
        ),
        migrations.RunPython(create, restore),
    ]
