"""Bookkeeping a worker does not wait for, written in batches: task history, workflow step
states, and the removal of fired chords' rows.

A task's own effect (a charge, a message, a stock count) is committed before the task
returns, as at-least-once delivery requires. The record of it having run is not needed by
anything the worker does next, so inside a worker process it is merged per row in memory
and written by a background thread every WRITE_BEHIND_SECONDS, one statement per table for
the whole batch: a task that starts and succeeds between two flushes costs one row in one
UPDATE instead of several statements of its own (the benchmark's database-cost figure).

What this trades: a process killed outright (SIGKILL, OOM) loses the records of its last
WRITE_BEHIND_SECONDS; the effects are in the database already, and the stuck-workflow
recovery settles the steps of orders that finished meanwhile. Failures, retries and revokes
are written at once (`write_now`), after whatever is pending for the same row, so that a
late flush never overwrites them. Outside a worker (web, beat, shell, unit tests) every
write happens at once.
"""

import logging
import os
import threading
from collections.abc import Callable, Hashable
from contextlib import nullcontext
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Model

from tasks_admin.sql import db_value

logger = logging.getLogger(__name__)

Rows = dict[Hashable, dict[str, Any]]
MAX_PENDING_ROWS = 50_000  # per table; past it (a long database outage) the oldest records are dropped
RUN_AGAIN = ("40P01", "40001")  # PostgreSQL's deadlock_detected and serialization_failure: retry the transaction
RETRIES_AFTER_DEADLOCK = 2

# _lock guards the pending rows (held for a dict operation); _write_lock orders the flusher's
# batches with the rows written at once, so that a late batch never overwrites them.
_lock = threading.Lock()
_write_lock = threading.Lock()
_tables: list["Table"] = []
_enabled_pid: int | None = None  # the worker process that batches; elsewhere writes happen at once
_flusher: threading.Thread | None = None
_wake = threading.Event()


class Table:
    """Pending rows of one table, merged by key: later fields win, `additive` ones add up.

    `rows_of` (a model and the unique field the keys are values of) names the rows a batch
    writes: a flush locks those of all its batches first, in key order, so that two processes'
    flushes never cross on them (_lock_in_order)."""

    def __init__(
        self,
        name: str,
        write: Callable[[Rows], None],
        additive: tuple[str, ...] = (),
        rows_of: tuple[type[Model], str] | None = None,
    ) -> None:
        self.name, self.write, self.additive, self.rows_of = name, write, additive, rows_of
        self._rows: Rows = {}
        _tables.append(self)

    def put(self, key: Hashable, **fields: Any) -> None:
        """Record `fields` for the row `key`: batched in a worker, written at once elsewhere
        (best effort: an error is logged, and a caller's transaction stays usable)."""
        if not _batching():
            try:
                with _savepoint():
                    self.write({key: fields})
            except (DatabaseError, InterfaceError):
                logger.warning("Could not write a %s record", self.name, exc_info=True)
            return
        with _lock:
            self._merge(key, fields)
            if len(self._rows) >= settings.WRITE_BEHIND_MAX_ROWS:
                _wake.set()

    def write_now(self, key: Hashable, **fields: Any) -> None:
        """Write `fields` for the row `key` at once, after anything pending for it, so that no
        later batch can overwrite them (failures, retries, revokes)."""
        with _write_lock:
            with _lock:
                pending = self._rows.pop(key, {})
                self._rows[key] = pending
                self._merge(key, fields)
                row = self._rows.pop(key)
            self.write({key: row})

    def _merge(self, key: Hashable, fields: dict[str, Any]) -> None:
        row = self._rows.setdefault(key, {})
        for name, value in fields.items():
            row[name] = row.get(name, 0) + value if name in self.additive else value

    def _take(self) -> Rows:
        rows, self._rows = self._rows, {}
        return rows

    def _restore(self, rows: Rows) -> None:
        """Put back a batch that could not be written, under anything recorded since."""
        newer, self._rows = self._rows, {}
        for key, fields in rows.items():
            self._merge(key, fields)
        for key, fields in newer.items():
            self._merge(key, fields)
        while len(self._rows) > MAX_PENDING_ROWS:
            self._rows.pop(next(iter(self._rows)))
            logger.warning("%s: too many records waiting for the database; dropped the oldest", self.name)


def run_again(request) -> bool:
    """A task run again (retried, or redelivered after a worker died) has its outcome written at
    once, not batched: such runs are few, and they are the ones staff look into; batched, a
    record could die with the next pool process the same fault kills (tests/reliability/test_pool_child_killed.py)."""
    return bool(request.retries or (request.delivery_info or {}).get("redelivered"))


def update_rows(
    model: type[Model],
    key_fields: tuple[str, ...],
    rows: Rows,
    additive: tuple[str, ...] = (),
    only_if: dict[str, Any] | None = None,
) -> int:
    """Write many rows' fields in one UPDATE, each column a CASE on the row's key (what
    Django's bulk_update does on the primary key, here on any unique key, and built as SQL
    directly: resolving thousands of ORM expressions cost the flusher more than the write).
    `additive` columns are added to the stored value; `only_if` ({field: value}) leaves rows
    that do not hold those values alone. Returns how many rows matched."""
    meta, quote = model._meta, connection.ops.quote_name
    keys = [quote(meta.get_field(name).column) for name in key_fields]
    key_params = {
        key: [
            db_value(model, name, part)
            for name, part in zip(key_fields, key if len(key_fields) > 1 else (key,), strict=True)
        ]
        for key in rows
    }
    match = " AND ".join(f"{column} = %s" for column in keys)
    assignments, params = [], []
    for name in dict.fromkeys(name for fields in rows.values() for name in fields):
        field = meta.get_field(name)
        column = quote(field.column)
        whens = []
        for key, fields in rows.items():
            if name in fields:
                whens.append(f"WHEN {match} THEN %s")
                params += [*key_params[key], db_value(model, name, fields[name])]
        if name in additive:
            assignments.append(f"{column} = {column} + CASE {' '.join(whens)} ELSE 0 END")
        else:
            assignments.append(f"{column} = CASE {' '.join(whens)} ELSE {column} END")
    where = " OR ".join(f"({match})" for _ in rows)
    params += [param for key in rows for param in key_params[key]]
    for name, value in (only_if or {}).items():
        where = f"({where}) AND {quote(meta.get_field(name).column)} = %s"
        params.append(db_value(model, name, value))
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {quote(meta.db_table)} SET {', '.join(assignments)} WHERE {where}", params)
        return cursor.rowcount


def flush() -> None:
    """Write every pending row now (the flusher's loop, and a process on its way out).

    Every table's batch in one transaction (one commit a flush, not one a table: the
    benchmark's write-transaction figure); if the database refuses it, table by table."""
    with _write_lock:
        batches = []
        with _lock:
            for table in _tables:
                if rows := table._take():
                    batches.append((table, rows))
        if not batches:
            return
        try:
            _write_together(batches)
            return
        except (OperationalError, InterfaceError) as exc:  # the database is away: later
            logger.warning("Could not write %d batches of records (retried shortly): %s", len(batches), exc)
            connection.close()  # reconnect on the next attempt
            with _lock:
                for table, rows in batches:
                    table._restore(rows)
            return
        except DatabaseError:  # a row the database refuses must not block the rest: table by table
            pass
        except Exception:  # a bug: tried table by table, so that one table's bug loses only its records
            logger.exception("Could not write a flush of %d batches; writing them table by table", len(batches))
        for table, rows in batches:
            _write_table(table, rows)


def _write_together(batches: list[tuple["Table", Rows]]) -> None:
    """One transaction, its rows locked in key order first (_lock_in_order); run again if
    PostgreSQL aborted it all the same (a deadlock with a transaction that is not a flush, or a
    serialization failure), rather than leaving it for the next flush."""
    for attempt in range(1 + RETRIES_AFTER_DEADLOCK):
        try:
            # The flusher thread has no transaction of its own; one batch needs none either.
            with transaction.atomic() if len(batches) > 1 else nullcontext():
                _lock_in_order(batches)
                for table, rows in batches:
                    table.write(rows)
            return
        except OperationalError as exc:
            if getattr(exc.__cause__, "pgcode", None) not in RUN_AGAIN or attempt == RETRIES_AFTER_DEADLOCK:
                raise
            logger.info("A flush of %d batches was aborted to break a deadlock; running it again", len(batches))


def _lock_in_order(batches: list[tuple["Table", Rows]]) -> None:
    """Lock the rows that two or more of a flush's batches write, sorted by key, before writing
    any. Two pool processes' flushes write the same task records whenever one records the run of
    a task the other records having sent, each batch in a statement of its own: in opposite
    orders, PostgreSQL aborted one flush as a deadlock after a second of waiting (all of a
    worker's pool processes flush as it shuts down: 1.6 s to stop became up to 14 s). Locked in
    one order, the second flush waits for the first and never deadlocks
    (tests/integration/test_flush_deadlock.py). One batch a model is one statement: no lock."""
    if not connection.features.has_select_for_update:
        return
    written: dict[tuple[type[Model], str], list[Rows]] = {}
    for table, rows in batches:
        if table.rows_of:
            written.setdefault(table.rows_of, []).append(rows)
    for (model, field), batches_of_model in written.items():
        if len(batches_of_model) > 1:
            keys = sorted(set().union(*batches_of_model))
            rows = model._base_manager.filter(**{f"{field}__in": keys}).order_by(field)
            list(rows.select_for_update().values_list("pk", flat=True))


def _write_table(table: "Table", rows: Rows) -> None:
    try:
        table.write(rows)  # in autocommit
    except (OperationalError, InterfaceError) as exc:  # the database is away: later
        logger.warning("Could not write %d %s records (retried shortly): %s", len(rows), table.name, exc)
        connection.close()  # reconnect on the next attempt
        with _lock:
            table._restore(rows)
    except DatabaseError:  # a row the database refuses would block the batch for ever: one by one
        _write_one_by_one(table, rows)
    except Exception:  # a bug: these records are lost, the flusher carries on with the next
        logger.exception("Could not write %d %s records; dropped them", len(rows), table.name)


def _write_one_by_one(table: "Table", rows: Rows) -> None:
    """Write each row of a refused batch on its own, dropping (and logging) those refused again
    (tests/unit/test_writebehind.py)."""
    for key, fields in rows.items():
        try:
            with _savepoint():
                table.write({key: fields})
        except (OperationalError, InterfaceError):
            connection.close()
            with _lock:
                table._restore({key: fields})
        except DatabaseError:
            logger.exception("Could not write the %s record %s; dropped it", table.name, key)


def _savepoint():
    """A failed write leaves a caller's transaction usable; in autocommit (the flusher) it costs nothing."""
    return transaction.atomic() if connection.in_atomic_block else nullcontext()


def _batching() -> bool:
    return _enabled_pid == os.getpid()


def _run_flusher() -> None:
    while True:
        _wake.wait(settings.WRITE_BEHIND_SECONDS)
        _wake.clear()
        flush()


def start_batching(task=None, **kwargs) -> None:
    """From this process's first task on: batch, with a flusher thread (and its own
    database connection). Runs where tasks run: a prefork pool process, or the worker itself
    for the threads and solo pools."""
    global _enabled_pid, _flusher
    if _batching() or settings.WRITE_BEHIND_SECONDS <= 0 or getattr(task.request, "is_eager", False):
        return
    with _lock:
        _enabled_pid = os.getpid()
        for table in _tables:
            table._rows = {}  # a forked pool process starts with none of its parent's
        _flusher = threading.Thread(target=_run_flusher, name="write-behind", daemon=True)
        _flusher.start()


def flush_on_exit(**kwargs) -> None:
    if _batching():
        flush()
