"""Helpers for the few statements written as SQL (the single-statement upserts on hot paths),
and for /metrics' reads of a tally and its table in one snapshot."""

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import DatabaseError, connection, transaction
from django.db.models import Model

logger = logging.getLogger(__name__)
T = TypeVar("T")


def db_value(model: type[Model], field_name: str, value: Any) -> Any:
    """`value` as the ORM would send it for `model.field_name` on this connection (a UUID as
    hex on SQLite, a datetime in UTC, a Decimal quantized)."""
    return model._meta.get_field(field_name).get_db_prep_value(value, connection)


def read_tally(fold: Callable[[], object] | None, read: Callable[[], T], what: str) -> T:
    """/metrics' figures kept in a tally (tasks_admin/tally.py, tasks_admin/rowcounts.py,
    orders/tally.py): `fold()` first moves what it can from the table into its tally, then
    `read()` adds up the tally and the rows not folded yet, in one snapshot (PostgreSQL's
    REPEATABLE READ; SQLite's transactions are serializable already; inside a test's
    transaction, that one): a concurrent fold moves rows from one to the other. A fold that
    fails (on a read-only replica, say) is logged: the figures are whole without it."""
    if fold is not None:
        try:
            fold()
        except DatabaseError:
            logger.warning("Could not fold %s into their tally", what, exc_info=True)
    with transaction.atomic():
        if connection.vendor == "postgresql" and not connection.savepoint_ids:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return read()
