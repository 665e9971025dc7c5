"""The result backend: django-celery-results' database backend (results in TaskResult,
chords through ChordCounter), with changes the failure-injection suite forced.

1. Chords that tolerate duplicate deliveries. The stock backend counts a chord's header
   down under SELECT ... FOR UPDATE, once per report: a header task delivered twice
   counts twice, and the callback fires before its siblings have finished. Here each
   header task is recorded once (a row unique on group and task id, inserted with
   ON CONFLICT DO NOTHING), and only a new row decrements the counter, by a single
   UPDATE ... RETURNING; the report that reaches zero fires the callback, so it fires
   exactly once. A header task that fails fails the chord at once: its report removes
   the counter (so only one report calls the error callbacks, and no later report can
   fire the callback). An immutable callback (`.si()`, as in the order workflow) is sent
   without first reading back every header result; if the broker refuses it, the chord
   is left to the stuck-workflow recovery rather than failing the header task that
   finished it. The counter itself is created once too: a chain step run again
   (redelivered, retried after its worker was lost) sends its chord again, and a second
   INSERT of the same group would fail the step. Its size is the one Celery sets while
   sending the header (`set_chord_size`: a header entry ending in a group reports once per
   task of it), and it never goes below zero. As in Celery's own backends, a failed chord's
   ChordError names the task's exception, and a callback that cannot be sent for another
   reason than the broker is recorded as the callback's error. Chord rows are read and
   written on one database, the router's for writes (tests/unit/test_result_backend.py).
2. Database outages. Writes — results, chord counters, chord reports — are retried
   while PostgreSQL is unreachable, but only until shortly before the running task's
   soft time limit (RESULT_WRITE_RETRY_SECONDS outside a task). Waiting longer turned
   an outage into a failure: the time limit interrupts the write, Celery records the
   task as failed and calls its error callback, which stops the order. A write still
   impossible then is logged and dropped: a result is only a record (the step's own
   WorkflowStep row says it succeeded), and a chord report that could not be counted
   leaves the order for the stuck-workflow recovery, which sends the callback.
3. Fewer statements (the benchmark's database-cost figure). A task whose result nothing
   reads says so with Celery's own `ignore_result` (the order workflow's steps: only their
   errors are stored, CELERY_TASK_STORE_ERRORS_EVEN_IF_IGNORED); the removal of a fired
   chord's rows is written with the worker's next batch (tasks_admin/writebehind.py). On
   PostgreSQL a header task's report is one statement (the part's INSERT and the count-down
   in one WITH). A chord whose header tasks are recorded in the history before it is sent
   can have its counter written by that same transaction (`planned_chord`): the worker that
   sends the chord then writes nothing for it. And a header task whose effect is one
   transaction can count its report in it (`atomic_with_chord_report`): its effect and its
   report commit together, in one commit instead of two.
"""

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from celery import chord, current_task, states
from celery.canvas import Signature, maybe_signature
from celery.exceptions import ChordError, SoftTimeLimitExceeded
from celery.result import AsyncResult, GroupResult
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    InterfaceError,
    OperationalError,
    connection,
    connections,
    router,
    transaction,
)
from django_celery_results.backends.database import DatabaseBackend, trigger_callback
from django_celery_results.models import ChordCounter
from kombu.exceptions import OperationalError as BrokerError

from . import writebehind
from .models import ChordPart
from .timelimits import soft_time_limit

logger = logging.getLogger(__name__)

T = TypeVar("T")

_INSERT_PART = (
    f"INSERT INTO {ChordPart._meta.db_table} (group_id, task_id, state, created_at) "
    "VALUES (%s, %s, %s, CURRENT_TIMESTAMP) ON CONFLICT (group_id, task_id) DO NOTHING RETURNING id"
)
_COUNT_DOWN = (
    f"UPDATE {ChordCounter._meta.db_table} SET count = count - 1 WHERE group_id = %s AND count > 0 RETURNING count"
)
# Both in one statement (PostgreSQL: a data-modifying WITH); no part is kept for a chord whose
# counter is gone (fired, cleaned up), and no row comes back unless the report counted. The
# counter is locked first, as its removal locks it first (_forget_chords): a late duplicate racing
# the removal either records its part before the parts are deleted, or finds no counter
# (tests/integration/test_chord_removal_race.py).
_COUNT_PART = (
    f"WITH counter AS (SELECT 1 FROM {ChordCounter._meta.db_table} WHERE group_id = %s FOR UPDATE), "
    f"part AS (INSERT INTO {ChordPart._meta.db_table} (group_id, task_id, state, created_at) "
    "SELECT %s, %s, %s, CURRENT_TIMESTAMP FROM counter "
    "ON CONFLICT (group_id, task_id) DO NOTHING RETURNING 1) "
    f"UPDATE {ChordCounter._meta.db_table} SET count = count - 1 "
    "WHERE group_id = %s AND count > 0 AND EXISTS (SELECT 1 FROM part) RETURNING count"
)
# A chord's real size, once Celery knows it (set_chord_size): the counter moves by the difference.
_RESIZE = (
    f"UPDATE {ChordCounter._meta.db_table} SET count = count + %s "
    "WHERE group_id = %s AND count + %s >= 0 RETURNING count"
)
_CREATE_COUNTER = (
    f"INSERT INTO {ChordCounter._meta.db_table} (group_id, sub_tasks, count) VALUES (%s, %s, %s) "
    "ON CONFLICT (group_id) DO NOTHING"
)


# On a planned chord's callback (its options' headers): the chord's counter was written when the
# canvas was built, at this size, under the callback's task id (planned_chord).
PLANNED_CHORD_HEADER = "shop_chord_planned"


def planned_chord(header: list[Signature], body: Signature) -> chord:
    """A chord whose counter is written now, in the caller's transaction, instead of by the worker
    that sends the chord (apply_chord): one write transaction fewer in the worker. For a canvas
    sent once that transaction commits and whose header tasks are recorded in the history with
    it (history.record_planned): the cleanup of orphaned counters keeps a counter whose header
    is planned or live. Each header entry is a single task, and every task its id.

    Celery picks the chord's group id only when the canvas is sent, so the counter and its
    reports are keyed by the callback's task id instead (known now, and the same when the chord
    is sent again); the callback's options say so (PLANNED_CHORD_HEADER), and `_chord_key`
    reads it from each report. The counter starts at the header's size; should Celery count
    another size when it sends the header, set_chord_size corrects it."""
    if not header or not body.id or any(sig.subtask_type or not sig.id for sig in header):
        raise ValueError("A planned chord's header is single tasks; each task, and its callback, has its id.")
    sub_tasks = json.dumps([AsyncResult(sig.id).as_tuple() for sig in header])
    with connections[_chord_db()].cursor() as cursor:
        cursor.execute(_CREATE_COUNTER, [body.id, sub_tasks, len(header)])
    body = body.clone()
    body.options["headers"] = {**(body.options.get("headers") or {}), PLANNED_CHORD_HEADER: len(header)}
    return chord(header, body)


def forget_planned_chord(callback_id: str) -> None:
    """Remove the counter of a planned chord that could not be sent after all (broker down), as
    history.forget_planned does its tasks: whoever sends the canvas later writes a new one.
    Best effort: a counter left behind is an orphan the cleanup removes."""
    try:
        ChordCounter.objects.using(_chord_db()).filter(group_id=callback_id).delete()
    except (DatabaseError, InterfaceError):
        logger.warning("Could not remove the counter of planned chord %s", callback_id, exc_info=True)


def _planned(body) -> tuple[str, int] | None:
    """A planned chord's key (its callback's task id) and the size its counter was written with."""
    if body is None:
        return None
    options = body.get("options") or {}
    size = (options.get("headers") or {}).get(PLANNED_CHORD_HEADER)
    return (options["task_id"], size) if size and options.get("task_id") else None


def _chord_key(request) -> str:
    """The key of the chord a header task reports to: its group id, or a planned chord's own."""
    planned = _planned(request.chord)
    return planned[0] if planned else request.group


def _forget_chords(rows: writebehind.Rows) -> None:
    """A fired chord's counter and parts, no longer needed. The counter first, in the same
    transaction: a late duplicate report locks it before it records a part (_COUNT_PART), so it
    waits and then finds no counter. Deleting the parts first left such a report's part behind
    once (scenario 7; tests/integration/test_chord_removal_race.py)."""
    db, groups = _chord_db(), list(rows)
    with transaction.atomic(using=db):
        ChordCounter.objects.using(db).filter(group_id__in=groups).delete()
        ChordPart.objects.using(db).filter(group_id__in=groups).delete()


_fired_chords = writebehind.Table("fired chord", _forget_chords)

# In the thread running a task (prefork child or pool thread), where its result writes happen:
# (task id, monotonic time after which they stop waiting for the database). Per thread, not
# per task id: a retry can run on another thread while its previous run still writes.
_running = threading.local()


def set_write_deadline(task_id: str, task, **kw) -> None:
    soft = soft_time_limit(task)
    # Leave the rest of the bookkeeping (each write then tried once) time to end before the soft limit does.
    _running.task = (task_id, time.monotonic() + soft - max(0.5, soft / 10)) if soft else None


def forget_write_deadline(task_id: str, **kw) -> None:
    _running.task = None
    _running.counted = None


@contextmanager
def atomic_with_chord_report(using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """`transaction.atomic(using)` that also carries the running task's report to its chord, when
    that task is a chord header task in a worker and the block ends without an error: the
    task's writes and its report commit together or not at all, in one commit instead of two,
    and no crash falls between them. If the report was the last, the callback is sent as soon
    as that transaction commits (as a report counted on its own sent it as soon as it was
    counted); Celery's report when the task returns (on_chord_part_return) then writes nothing.
    A block that raises rolls its report back with its writes: the task reports as usual.

    For the one transaction of a task that holds its effect (orders/services.py's steps in the
    workflow's chord). Outside a chord, eagerly, or with chords kept on another database than
    `using`, it is `transaction.atomic(using)`."""
    with transaction.atomic(using=using):
        yield
        _count_running_report(using)


def _count_running_report(using: str) -> None:
    task = current_task
    request = getattr(task, "request", None)
    if request is None or not (request.chord and request.group and request.id) or request.is_eager:
        return
    chords = task.backend
    if not isinstance(chords, ShopDatabaseBackend) or _chord_db() != using:
        return
    key, task_id = _chord_key(request), request.id
    if _counted_already(key, task_id, keep=True) is not None:
        return  # a second such block in the same run: counted once
    outcome = chords._count_part(key, task_id, states.SUCCESS)

    def counted() -> None:
        _running.counted = (key, task_id, outcome)
        if outcome == 0:
            chords._fire(request, key)

    transaction.on_commit(counted, using=using, robust=True)


def _counted_already(group_id: str, task_id: str, keep: bool = False) -> int | str | None:
    """The count a task's report made with its writes (atomic_with_chord_report), if it did;
    forgotten once read unless `keep`."""
    counted = getattr(_running, "counted", None)
    if not keep:
        _running.counted = None
    if counted and counted[:2] == (group_id, task_id):
        return counted[2]
    return None


def _write_deadline(task_id: str | None) -> float:
    running = getattr(_running, "task", None)
    if task_id and running and running[0] == task_id:
        return running[1]
    return time.monotonic() + settings.RESULT_WRITE_RETRY_SECONDS


def _chord_db() -> str:
    """The database of chord counters and parts, for reads and writes alike (database routers)."""
    return router.db_for_write(ChordCounter)


def _errback_key(errback) -> tuple[str, str]:
    """An error callback, by task and arguments: the header's copy is a clone of the chord's."""
    errback = maybe_signature(errback)
    return errback.task, json.dumps(list(errback.args or ()), default=str)


class ShopDatabaseBackend(DatabaseBackend):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Chords this backend (one per thread) created, and the count each started at, until
        # Celery sets their real size (set_chord_size, called right after by the same thread).
        self._created_chords: dict[str, int] = {}
        # Likewise planned chords (planned_chord), whose counter was written with the canvas:
        # {group id: (key, size)}.
        self._planned_chords: dict[str, tuple[str, int]] = {}

    def exception_safe_to_retry(self, exc: Exception) -> bool:
        """For Celery's own retry loop (reads): an unreachable database is worth another try."""
        if isinstance(exc, OperationalError) or type(exc).__name__ == "OperationalError":
            connection.close()  # reconnect on the next attempt
            return True
        return super().exception_safe_to_retry(exc)

    def store_result(self, task_id, result, state, traceback=None, request=None, **kwargs):
        encoded = self.encode_result(result, state)
        # By position, as Celery calls it: django-celery-results names the parameters differently.
        self._write(
            f"store the {state} result of task {task_id}",
            task_id,
            lambda: self._store_result(task_id, encoded, state, traceback, request=request, **kwargs),
        )
        return encoded

    def apply_chord(self, header_result_args, body, **kwargs) -> None:
        """Create the chord's counter once (ON CONFLICT DO NOTHING); a planned chord's exists
        already (planned_chord): nothing to write."""
        header_result = header_result_args
        if not isinstance(header_result, GroupResult):
            header_result = self.app.GroupResult(*header_result_args)
        if planned := _planned(body):
            self._planned_chords[header_result.id] = planned
            return
        results = [r.as_tuple() for r in header_result]
        row = [header_result.id, json.dumps(results), body.get("chord_size") or len(results)]
        task = self.app.current_worker_task

        def create() -> bool:  # SQL, not bulk_create: a fifth of the time a chord took to send
            with connections[_chord_db()].cursor() as cursor:
                cursor.execute(_CREATE_COUNTER, row)
                return cursor.rowcount == 1

        created = self._write(
            f"create the counter of chord {header_result.id}", task.request.id if task else None, create
        )
        if created is None:
            logger.warning("Chord %s has no counter: the stuck-workflow recovery sends its callback", header_result.id)
        elif created:
            self._created_chords[header_result.id] = row[2]

    def set_chord_size(self, group_id: str, chord_size: int) -> None:
        """The header's real size, which Celery counts only while sending it: a header entry that
        is a chain ending in a group, or a group, reports once per task of that group
        (tests/unit/test_result_backend.py). The counter started at the number of entries and
        may have counted reports already: it moves by the difference. A chord sent again (a
        chain step redelivered) keeps its counter: the reports still missing are its size less
        the distinct reports counted (one ChordPart each)."""
        started_at = self._created_chords.pop(group_id, None)
        if started_at == chord_size:
            return  # the common case (every entry a task): no statement
        if planned := self._planned_chords.pop(group_id, None):
            group_id = planned[0]
            if planned[1] == chord_size:
                return  # its counter was written at this size with the canvas
        task = self.app.current_worker_task
        resized = self._write(
            f"set the size of chord {group_id}",
            task.request.id if task else None,
            lambda: self._resize(group_id, chord_size, started_at),
        )
        if resized is None:
            logger.warning("Chord %s: size %s not set; the stuck-workflow recovery finishes it", group_id, chord_size)

    def _resize(self, group_id: str, chord_size: int, started_at: int | None) -> bool:
        db = _chord_db()
        if started_at is not None:
            with connections[db].cursor() as cursor:
                delta = chord_size - started_at
                cursor.execute(_RESIZE, [delta, group_id, delta])
                return cursor.fetchone() is not None
        with transaction.atomic(using=db):
            counters = ChordCounter.objects.using(db).select_for_update().filter(group_id=group_id)
            if not counters.exists():
                return False
            counted = ChordPart.objects.using(db).filter(group_id=group_id).count()
            return bool(counters.update(count=max(chord_size - counted, 0)))

    def on_chord_part_return(self, request, state: str, result, **kwargs) -> None:
        group_id, task_id = request.group and _chord_key(request), request.id
        if not group_id or not task_id:
            return
        if _counted_already(group_id, task_id) is not None:
            return  # reported with the task's writes, and the callback sent if it was the last
        if state != states.SUCCESS:
            self._fail(request, group_id, task_id, state, result)
            return
        outcome = self._write(
            f"count {task_id} in chord {group_id}", task_id, lambda: self._count_part(group_id, task_id, state)
        )
        if outcome is None:
            logger.warning("Chord %s: %s not counted; the stuck-workflow recovery finishes it", group_id, task_id)
        elif outcome == 0:
            self._fire(request, group_id)

    def _fail(self, request, group_id: str, task_id: str, state: str, result) -> None:
        """A header task failed: the chord fails now. Removing its counter makes this report the
        only one that calls the error callbacks (a duplicate finds no counter), and keeps the
        others from counting: the callback never runs. An error callback the failed task has
        itself (task_allow_error_cb_on_chord_header) was called by Celery already; it is not
        called a second time for the chord (tests/unit/test_result_backend.py)."""
        removed = self._write(
            f"fail chord {group_id}",
            task_id,
            lambda: ChordCounter.objects.using(_chord_db()).filter(group_id=group_id).delete()[0],
        )
        if not removed:
            return
        _fired_chords.put(group_id)
        callback = maybe_signature(request.chord, app=self.app)
        own = getattr(request, "errbacks", None)
        if state == states.FAILURE and own:
            called = {_errback_key(errback) for errback in own}
            callback = callback.clone()
            callback.options["link_error"] = [
                errback for errback in callback.options.get("link_error") or [] if _errback_key(errback) not in called
            ]
        # As Celery's own backends word it, with the task's exception as the cause; raised so that
        # chord_error_from_stack records the traceback of the exception being handled.
        cause = result if isinstance(result, BaseException) else None
        try:
            raise ChordError(f"Dependency {task_id} raised {result!r}") from cause
        except ChordError as exc:
            self.chord_error_from_stack(callback, exc)

    def _count_part(self, group_id: str, task_id: str, state: str) -> int | str:
        """Record a header task's report once; the count left, or why it did not count."""
        db = _chord_db()
        if connections[db].vendor == "postgresql":
            with connections[db].cursor() as cursor:
                cursor.execute(_COUNT_PART, [group_id, group_id, task_id, state, group_id])
                row = cursor.fetchone()
            if row is None:
                logger.warning("Chord %s: %s not counted (reported before, or the chord is gone)", group_id, task_id)
                return "not counted"
            return row[0]
        with transaction.atomic(using=db), connections[db].cursor() as cursor:
            cursor.execute(_INSERT_PART, [group_id, task_id, state])
            if cursor.fetchone() is None:
                logger.warning("Chord %s: %s reported twice; counted once", group_id, task_id)
                return "reported before"
            cursor.execute(_COUNT_DOWN, [group_id])
            row = cursor.fetchone()
            if row is None:  # a late duplicate: keep no part of a chord that is gone
                transaction.set_rollback(True, using=db)
        if row is None:
            logger.warning("Chord %s: no counter (already fired or cleaned up)", group_id)
            return "no counter"
        return row[0]

    def _fire(self, request, group_id: str) -> None:
        """The last header task reported, every one a success (a failure removes the counter)."""
        callback = maybe_signature(request.chord, app=self.app)
        if callback.immutable:
            try:
                callback.delay()
            except BrokerError as exc:  # the chord is done; the stuck-workflow recovery sends its callback
                logger.warning("Chord %s complete, but its callback could not be sent: %s", group_id, exc)
                return
            except Exception as exc:  # as django-celery-results' trigger_callback: the callback's error, not
                # the header task's (tests/unit/test_result_backend.py)
                logger.exception("Chord %s: its callback could not be sent", group_id)
                self.chord_error_from_stack(callback, ChordError(f"Callback error: {exc!r}"))
        else:
            counter = ChordCounter.objects.using(_chord_db()).get(group_id=group_id)
            trigger_callback(app=self.app, callback=callback, group_result=counter.group_result(app=self.app))
        _fired_chords.put(group_id)  # a late duplicate report meanwhile finds its part there and is ignored

    def _write(self, what: str, task_id: str | None, write: Callable[[], T]) -> T | None:
        """`write()`, retried with backoff and jitter while the database is unreachable, until
        the task's write deadline; then logged and given up (None) instead of raising."""
        deadline = _write_deadline(task_id)
        attempt = 0
        while True:
            try:
                return write()
            except (OperationalError, InterfaceError) as exc:
                if connection.in_atomic_block:
                    raise  # the caller's transaction is lost: it must fail as a whole
                connection.close()  # reconnect on the next attempt
                attempt += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.warning("Could not %s (database unavailable, %d attempts): %s", what, attempt, exc)
                    return None
                pause = get_exponential_backoff_interval(
                    self.base_sleep_between_retries_ms, attempt, self.max_sleep_between_retries_ms, True
                )
                try:
                    time.sleep(min(pause / 1000, remaining))
                except SoftTimeLimitExceeded:
                    return self._out_of_time(what, task_id)
            except SoftTimeLimitExceeded:
                return self._out_of_time(what, task_id)

    def _out_of_time(self, what: str, task_id: str | None) -> None:
        """The soft time limit struck while a write waited: the task's later writes are tried once."""
        running = getattr(_running, "task", None)
        if task_id and running and running[0] == task_id:
            _running.task = (task_id, 0.0)
        logger.warning("Could not %s before the soft time limit", what)
        return None
