"""The admin benchmark's data: a task history of order workflows and periodic jobs, the orders
it belongs to, and django-celery-results' rows for the same tasks, generated the same way every
time and loaded with COPY (the ORM would take longer than the benchmark itself), then vacuumed
and analysed as autovacuum leaves a real table."""

import io
import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import states
from django.core.management.color import no_style
from django.db import connection, transaction
from django.utils import timezone
from django_celery_results.models import TaskResult

from orders.models import Order
from tasks_admin import tally
from tasks_admin.models import FINAL_STATES, TaskRecord, TaskTally

HISTORY_DAYS = 30
WORKFLOW_EVERY = 30  # one order workflow (6 tasks) per 30 tasks: a fifth of the history is order steps
SEED = 20_26

Log = Callable[[str], None]

WORKFLOW = (
    ("orders.tasks.charge_payment", "orders", '"PAY-7Q2M9X"'),
    ("orders.tasks.create_shipment", "orders", '"SHP-4K8D2T"'),
    ("orders.tasks.send_confirmation_email", "notifications", "1"),
    ("orders.tasks.send_confirmation_sms", "notifications", "1"),
    ("orders.tasks.record_sales", "orders", "true"),
    ("orders.tasks.confirm_order", "orders", "true"),
)
JOBS = (  # task, queue, periodic task, result, weight
    ("orders.tasks.summarize_sales_chunk", "orders", "", '{"orders": 5, "units": 9, "revenue": "61.70"}', 40),
    ("orders.tasks.recover_stuck_workflows", "orders", "Recover stuck workflows", '{"resent": []}', 25),
    ("orders.tasks.cancel_stale_orders", "orders", "Cancel stale orders", '{"cancelled": 0}', 20),
    ("shop.tasks.send_low_stock_alert", "celery", "Low stock alert", "0", 8),
    ("orders.tasks.build_daily_sales_report", "orders", "Daily sales report", '"2026-01-01"', 3),
    ("orders.tasks.store_sales_report", "orders", "", '{"orders": 812, "units": 1630}', 3),
    ("tasks_admin.tasks.cleanup_task_history", "celery", "Clean up task history", '{"results": 0}', 1),
)
STATES = (states.SUCCESS, states.FAILURE, states.PENDING, states.RETRY, states.STARTED)
STATE_WEIGHTS = (94, 3, 1, 1, 1)
ERRORS = {  # queue → (exception module, type, message)
    "orders": ("django.db.utils", "OperationalError", "server closed the connection unexpectedly"),
    "notifications": ("notifications.sms", "SmsGatewayError", "The SMS gateway answered 503 Service Unavailable"),
    "celery": ("celery.exceptions", "SoftTimeLimitExceeded", "SoftTimeLimitExceeded()"),
}
DECLINED = ("orders.payments", "PaymentDeclined", "Card declined by the issuer")

TASK_COLUMNS = (
    "id, task_id, task_name, state, args, kwargs, queue, exchange, routing_key, root_id, parent_id, group_id, "
    "chord_id, eta, subject_type, subject_id, periodic_task_name, sent_at, started_at, finished_at, runtime, "
    "worker, attempts, retries, exception_type, exception_message, expected_failure, resolution_note, tallied"
)
RESULT_COLUMNS = (
    "id, task_id, periodic_task_name, task_name, task_args, task_kwargs, status, worker, content_type, "
    "content_encoding, result, date_created, date_started, date_done, traceback, meta"
)
ORDER_COLUMNS = (
    "id, number, status, customer_name, email, phone, shipping_address, total, failure_reason, "
    "sales_recorded_at, stock_released_at, created_at, updated_at, counted_as"
)
NULL = "\\N"


@dataclass(slots=True)
class _Task:
    pk: int
    task_id: str
    name: str
    queue: str
    periodic: str
    state: str
    args: list
    root_id: str
    parent_id: str
    group_id: str
    chord_id: str
    order_id: str | None
    sent: datetime
    started: datetime | None
    finished: datetime | None
    retries: int
    worker: str
    error: tuple[str, str, str] | None
    result: str


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _sent_at(pk: int, rows: int, now: datetime) -> datetime:
    """Evenly over the last HISTORY_DAYS, in id order, as tasks are recorded when sent."""
    return now - timedelta(days=HISTORY_DAYS) * (1 - (pk - 1) / rows)


def _order_ids(rows: int) -> list[str]:
    rng = random.Random(SEED)
    return [_uuid(rng) for _ in range((rows - 1) // WORKFLOW_EVERY + 1)]


def _history(rows: int, order_ids: list[str], now: datetime) -> Iterator[_Task]:
    """The same tasks every time for the same rows, so both tables describe the same history."""
    rng = random.Random(SEED + 1)
    jobs, job_weights = JOBS, [job[-1] for job in JOBS]
    workflow: list[str] = []
    for pk in range(1, rows + 1):
        step = (pk - 1) % WORKFLOW_EVERY
        state = rng.choices(STATES, STATE_WEIGHTS)[0]
        order_id, group_id, chord_id, parent_id = None, "", "", ""
        if step < len(WORKFLOW):
            if step == 0:
                workflow = [_uuid(rng) for _ in range(len(WORKFLOW) + 1)]  # six steps and the chord's group
            name, queue, result = WORKFLOW[step]
            task_id, root_id, periodic = workflow[step], workflow[0], ""
            order_id = order_ids[(pk - 1) // WORKFLOW_EVERY]
            args: list = [order_id]
            parent_id = workflow[min(step - 1, 1)] if step else ""
            if 2 <= step <= 4:  # the chord header: e-mail, SMS, sales
                group_id, chord_id = workflow[6], workflow[5]
            error = DECLINED if step == 0 else ERRORS[queue]
        else:
            name, queue, periodic, result, _ = rng.choices(jobs, job_weights)[0]
            task_id = _uuid(rng)
            root_id = task_id
            args = [[_uuid(rng) for _ in range(5)]] if name.endswith("summarize_sales_chunk") else []
            error = ERRORS[queue]
        sent = _sent_at(pk, rows, now)
        started = finished = None
        if state != states.PENDING:
            started = sent + timedelta(seconds=rng.uniform(0.002, 0.4))
        if state in (states.SUCCESS, states.FAILURE):
            finished = started + timedelta(seconds=rng.uniform(0.01, 1.5))
        yield _Task(
            pk=pk,
            task_id=task_id,
            name=name,
            queue=queue,
            periodic=periodic,
            state=state,
            args=args,
            root_id=root_id,
            parent_id=parent_id,
            group_id=group_id,
            chord_id=chord_id,
            order_id=order_id,
            sent=sent,
            started=started,
            finished=finished,
            retries=rng.randint(1, 3) if state == states.RETRY else (5 if state == states.FAILURE else 0),
            worker=f"{queue}@shop-worker-{rng.randint(1, 4)}" if started else "",
            error=error if state in (states.FAILURE, states.RETRY) else None,
            result=result,
        )


def _text(value: str) -> str:
    """Escaped for COPY's text format."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _time(value: datetime | None) -> str:
    return value.isoformat() if value else NULL


def _task_line(task: _Task) -> str:
    error = task.error
    runtime = f"{(task.finished - task.started).total_seconds():.6f}" if task.finished else NULL
    declined = error is DECLINED and task.state == states.FAILURE
    eta = task.sent + timedelta(seconds=2**task.retries) if task.state == states.RETRY else None
    return (
        "\t".join(
            (
                str(task.pk),
                task.task_id,
                task.name,
                task.state,
                _text(json.dumps(task.args)),
                "{}",
                task.queue,
                "",
                task.queue,
                task.root_id,
                task.parent_id,
                task.group_id,
                task.chord_id,
                _time(eta),
                "orders.order" if task.order_id else "",
                task.order_id or "",
                task.periodic,
                _time(task.sent),
                _time(task.started),
                _time(task.finished),
                runtime,
                task.worker,
                str(task.retries + 1 if task.started else 0),
                str(task.retries),
                error[1] if error else "",
                _text(error[2]) if error else "",
                "t" if declined else "f",
                "",
                "t" if task.state in FINAL_STATES else "f",  # folded into /metrics' tally, as scrapes left it
            )
        )
        + "\n"
    )


def _result_line(task: _Task) -> str:
    """The row django-celery-results (result_extended) stores for the same task."""
    traceback = NULL
    if task.error:
        module, kind, message = task.error
        result = json.dumps({"exc_type": kind, "exc_message": [message], "exc_module": module})
        if task.state == states.FAILURE:
            traceback = _text(
                f'Traceback (most recent call last):\n  File "celery/app/trace.py", line 453, in trace_task\n'
                f"    R = retval = fun(*args, **kwargs)\n{module}.{kind}: {message}\n"
            )
    elif task.state == states.STARTED:
        result = json.dumps({"pid": 4242, "hostname": task.worker})
    elif task.state == states.SUCCESS:
        result = task.result
    else:
        result = "null"
    created = task.started or task.sent
    return (
        "\t".join(
            (
                str(task.pk),
                task.task_id,
                NULL,
                task.name,
                _text(json.dumps(repr(tuple(task.args)))),
                _text(json.dumps("{}")),
                task.state,
                task.worker or NULL,
                "application/json",
                "utf-8",
                _text(result),
                _time(created),
                _time(task.started),
                _time(task.finished or created),
                traceback,
                '{"children": []}',
            )
        )
        + "\n"
    )


def _order_lines(order_ids: list[str], rows: int, now: datetime) -> Iterator[str]:
    rng = random.Random(SEED + 2)
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    numbers: set[str] = set()
    for index, order_id in enumerate(order_ids):
        number = ""
        while not number or number in numbers:
            code = "".join(rng.choices(alphabet, k=10))
            number = f"SO-{code[:5]}-{code[5:]}"
        numbers.add(number)
        created = _sent_at(index * WORKFLOW_EVERY + 1, rows, now) - timedelta(seconds=0.05)
        updated = created + timedelta(seconds=rng.uniform(2, 8))
        yield (
            "\t".join(
                (
                    order_id,
                    number,
                    Order.Status.CONFIRMED,
                    f"Customer {index}",
                    f"customer{index}@example.com",
                    f"+4420794{index % 100_000:05d}",
                    f"{index % 200 + 1} Example Street, London",
                    f"{rng.randint(500, 25_000) / 100:.2f}",
                    "",
                    _time(updated),
                    NULL,
                    _time(created),
                    _time(updated),
                    Order.Status.CONFIRMED,  # counted in /metrics' tally (tasks_admin/rowcounts.py)
                )
            )
            + "\n"
        )


class _Lines(io.TextIOBase):
    """A read()-able view of generated lines, so COPY streams a table that is never whole in memory."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self._buffer = ""

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> str:
        size = -1 if size is None else size
        chunks, length = [self._buffer], len(self._buffer)
        for line in self._lines:
            chunks.append(line)
            length += len(line)
            if 0 <= size <= length:
                break
        data = "".join(chunks)
        if size < 0:
            self._buffer = ""
            return data
        self._buffer = data[size:]
        return data[:size]


def load(rows: int, log: Log) -> dict[str, float]:
    """Fill the (migrated, empty) default database; returns the seconds each step took."""
    now = timezone.now()
    order_ids = _order_ids(rows)
    steps = (
        ("orders", Order, ORDER_COLUMNS, lambda: _order_lines(order_ids, rows, now)),
        ("task history", TaskRecord, TASK_COLUMNS, lambda: map(_task_line, _history(rows, order_ids, now))),
        ("stock results", TaskResult, RESULT_COLUMNS, lambda: map(_result_line, _history(rows, order_ids, now))),
    )
    seconds = {}
    with transaction.atomic(), connection.cursor() as cursor:
        for label, model, columns, lines in steps:
            start = time.perf_counter()
            cursor.copy_expert(f"COPY {model._meta.db_table} ({columns}) FROM STDIN", _Lines(lines()), size=1 << 20)
            seconds[label] = round(time.perf_counter() - start, 1)
            log(f"Loaded {cursor.rowcount:,} {label} rows in {seconds[label]} s.")
        for statement in connection.ops.sequence_reset_sql(no_style(), [TaskRecord, TaskResult]):
            cursor.execute(statement)
        start = time.perf_counter()
        TaskTally.objects.bulk_create(
            TaskTally(task_name=name, state=state, expected_failure=expected, **vars(sums))
            for (name, state, expected), sums in tally.aggregate(TaskRecord.objects.filter(tallied=True)).items()
        )
        seconds["metrics tally"] = round(time.perf_counter() - start, 1)
        log(f"Tallied the finished runs for /metrics in {seconds['metrics tally']} s.")
    start = time.perf_counter()
    with connection.cursor() as cursor:
        # As autovacuum leaves a table in production: statistics, and a visibility map for index-only scans.
        for model in (Order, TaskRecord, TaskResult):
            cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")
    seconds["vacuum analyze"] = round(time.perf_counter() - start, 1)
    log(f"VACUUM ANALYZE in {seconds['vacuum analyze']} s.")
    return seconds
