"""A failed order may be cancelled by its customer or staff (request_cancel from `failed`): the
transition trigger of 0005 rebuilt with the pair failed → cancelling."""

import importlib

from django.db import migrations

previous = importlib.import_module("orders.migrations.0006_cancellation")

# lifecycle.ALLOWED_PAIRS when this migration was written (tests/unit/test_lifecycle.py compares).
ALLOWED = sorted([*previous.ALLOWED, ("failed", "cancelling")])


def create(apps, schema_editor) -> None:
    previous._replace_trigger(schema_editor, ALLOWED)


def restore(apps, schema_editor) -> None:
    previous._replace_trigger(schema_editor, previous.ALLOWED)


class Migration(migrations.Migration):
    dependencies = [("orders", "0006_cancellation")]

    operations = [migrations.RunPython(create, restore)]
