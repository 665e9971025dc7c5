"""Counts the SQL a process sends, for the benchmark's database-cost figure.

Loaded into a worker (CELERY_EXTRA_IMPORTS / the stock app's imports) with BENCH_SQL_DIR set:
every statement through Django's database layer is counted, by kind, and so is every write
transaction (a write outside a transaction, or a commit after one). Each process adds its
counts to a file of its own in BENCH_SQL_DIR when it exits. With BENCH_SQL_DETAIL set, each
statement is also counted by its task, its transaction (autocommit or not) and its text's
start, and every write transaction by the task that committed it (`wtx.<task>`; the
write-behind flusher's under None): how docs/benchmarks.md's breakdown per task was made.
The demo payment provider's writes (its ledger, in the shop's database for the demo; a real
provider's is not) are also counted on their own, `provider write transactions`.
"""

import atexit
import json
import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import current_task, signals
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

_counts: Counter = Counter()
_lock = threading.Lock()
_WRITES = ("INSERT", "UPDATE", "DELETE")
_DETAIL = bool(os.environ.get("BENCH_SQL_DETAIL"))
_PROVIDER_TABLE = "orders_demogatewaycharge"  # orders.models.DemoGatewayCharge, written in autocommit


def _count(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "?"
    connection = context["connection"]
    with _lock:
        _counts["statements"] += 1
        _counts[f"statements.{verb}"] += 1
        _counts[f"task.{getattr(current_task, 'name', None)}"] += 1
        if _DETAIL:
            where = "autocommit" if connection.get_autocommit() else "transaction"
            _counts[f"detail.{getattr(current_task, 'name', None)}|{where}|{' '.join(sql.split())[:120]}"] += 1
        if verb in _WRITES or (verb == "WITH" and any(w in sql.upper() for w in _WRITES)):
            _counts["write statements"] += 1
            if connection.get_autocommit():
                _counts["write transactions"] += 1
                if _PROVIDER_TABLE in sql:
                    _counts["provider write transactions"] += 1
                if _DETAIL:
                    _counts[f"wtx.{getattr(current_task, 'name', None)}"] += 1
            else:
                connection._bench_wrote = True
    return execute(sql, params, many, context)


def _install(connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


_commit = BaseDatabaseWrapper.commit


def _counted_commit(self: BaseDatabaseWrapper) -> None:
    if getattr(self, "_bench_wrote", False):
        with _lock:
            _counts["write transactions"] += 1
            if _DETAIL:
                _counts[f"wtx.{getattr(current_task, 'name', None)}"] += 1
        self._bench_wrote = False
    return _commit(self)


_rollback = BaseDatabaseWrapper.rollback


def _counted_rollback(self: BaseDatabaseWrapper) -> None:
    self._bench_wrote = False
    return _rollback(self)


def _dump(**kwargs: Any) -> None:
    with _lock:
        if not _counts:
            return
        path = Path(os.environ["BENCH_SQL_DIR"]) / f"{os.getpid()}.json"
        previous = Counter(json.loads(path.read_text())) if path.exists() else Counter()
        path.write_text(json.dumps(previous + _counts))
        _counts.clear()


if os.environ.get("BENCH_SQL_DIR"):
    BaseDatabaseWrapper.commit = _counted_commit
    BaseDatabaseWrapper.rollback = _counted_rollback
    connection_created.connect(_install)
    for _connection in connections.all(initialized_only=True):
        _install(_connection)
    signals.worker_process_shutdown.connect(_dump, weak=False)
    signals.worker_shutdown.connect(_dump, weak=False)
    atexit.register(_dump)


def read(directory: Path) -> Counter:
    """The counts every process wrote to `directory`."""
    return sum((Counter(json.loads(p.read_text())) for p in directory.glob("*.json")), Counter())
