"""Order.counted_as: the status /metrics' tally counts the order under (tasks_admin/rowcounts.py),
`counted` (stored: whether it is the status) and the partial index of the orders moved since.

On SQLite, adding a NOT NULL column rebuilds the table, which drops 0005's transition trigger:
it is created again after (and after the column is removed, going back). Proven by
tests/unit/test_lifecycle.py::test_the_trigger_is_installed_in_this_database.
"""

import importlib

from django.db import migrations, models

cancellation = importlib.import_module("orders.migrations.0006_cancellation")
trigger = importlib.import_module("orders.migrations.0007_cancel_failed_orders")  # the latest trigger


def recreate_trigger(apps, schema_editor) -> None:
    cancellation._replace_trigger(schema_editor, trigger.ALLOWED)


class Migration(migrations.Migration):
    dependencies = [("orders", "0008_step_tally")]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, recreate_trigger),
        migrations.AddField(
            model_name="order",
            name="counted_as",
            field=models.CharField(blank=True, db_default="", editable=False, max_length=16),
        ),
        migrations.AddField(
            model_name="order",
            name="counted",
            field=models.GeneratedField(
                db_persist=True,
                expression=models.Q(("counted_as", models.F("status"))),
                output_field=models.BooleanField(),
            ),
        ),
        migrations.AddIndex(
            model_name="order",
            index=models.Index(condition=models.Q(("counted", False)), fields=["id"], name="order_uncounted"),
        ),
        migrations.RunPython(recreate_trigger, migrations.RunPython.noop),
    ]
