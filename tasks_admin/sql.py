"""Helpers for the few statements written as SQL: the single-statement upserts on hot paths."""

from typing import Any

from django.db import connection
from django.db.models import Model


def db_value(model: type[Model], field_name: str, value: Any) -> Any:
    """`value` as the ORM would send it for `model.field_name` on this connection (a UUID as
    hex on SQLite, a datetime in UTC, a Decimal quantized)."""
    return model._meta.get_field(field_name).get_db_prep_value(value, connection)
