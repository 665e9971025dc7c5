"""Helpers for the few statements written as SQL (the single-statement upserts on hot paths),
and for reads that must see one snapshot."""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from django.db import DatabaseError, connection, transaction
from django.db.models import Model

logger = logging.getLogger(__name__)
T = TypeVar("T")


def db_value(model: type[Model], field_name: str, value: Any) -> Any:
    """`value` as the ORM would send it for `model.field_name` on this connection (a UUID as
    hex on SQLite, a datetime in UTC, a Decimal quantized)."""
    return model._meta.get_field(field_name).get_db_prep_value(value, connection)


@contextmanager
def one_snapshot() -> Iterator[None]:
    """A transaction whose reads all see one snapshot of the database (PostgreSQL's REPEATABLE
    READ; SQLite's transactions are serializable already): for figures read from two tables
    while another process moves rows from one to the other. Inside an enclosing transaction (a
    test's) it reads in that one."""
    with transaction.atomic():
        if connection.vendor == "postgresql" and not connection.savepoint_ids:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def read_tally(fold: Callable[[], object] | None, read: Callable[[], T], what: str) -> T:
    """/metrics' figures kept in a tally (tasks_admin/tally.py, orders/tally.py): `fold()` first
    moves what it can from the table into its tally, then `read()` adds up the tally and the rows
    not folded yet in one snapshot. A fold that fails (on a read-only replica, say) is logged:
    the figures are whole without it."""
    if fold is not None:
        try:
            fold()
        except DatabaseError:
            logger.warning("Could not fold %s into their tally", what, exc_info=True)
    with one_snapshot():
        return read()
