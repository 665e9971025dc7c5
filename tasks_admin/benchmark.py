"""The task console's changelist timed against django-celery-results' stock admin over a large history.

The claim to prove is "fast with a million task rows on PostgreSQL", so the benchmark builds
exactly that: a scratch database on a PostgreSQL server, migrated, filled with COPY (the ORM
would take longer than the benchmark itself), vacuumed and analysed as autovacuum leaves a
real table; then it renders both admins' pages in-process with the test client, the stock
page and ours in the same run, and reports median and p95 side by side.

`run()` is the whole benchmark; `manage.py bench_admin` only parses options and prints.
"""

import io
import json
import os
import platform
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import django
from celery import states
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.color import no_style
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_celery_results.models import TaskResult
from psycopg2 import sql

from orders.models import Order
from shop.benchmarks.database import (
    BenchmarkError,
    default_database,
    drop_database,
    maintenance_cursor,
    server_settings,
    server_version,
)

from .models import TaskRecord

SCRATCH_DATABASE = "shop_bench_admin"
MIN_ROWS = 1000  # fewer, and a state or a workflow the pages are checked against may be missing
WARMUPS = 2
HISTORY_DAYS = 30
WORKFLOW_EVERY = 30  # one order workflow (6 tasks) per 30 tasks: a fifth of the history is order steps
SEED = 20_26

Log = Callable[[str], None]


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p95_ms: float
    queries: int


@dataclass(frozen=True)
class PageResult:
    page: str
    stock: Timing | None  # None: the stock admin cannot do it at all
    ours: Timing

    @property
    def speedup(self) -> float | None:
        return self.stock.median_ms / self.ours.median_ms if self.stock else None


@dataclass(frozen=True)
class Report:
    machine: dict[str, object]
    load_seconds: dict[str, float]
    pages: list[PageResult]

    def as_dict(self) -> dict:
        return {
            "machine": self.machine,
            "load_seconds": self.load_seconds,
            "pages": [
                {
                    "page": page.page,
                    "stock": asdict(page.stock) if page.stock else None,
                    "ours": asdict(page.ours),
                    "speedup": round(page.speedup, 1) if page.speedup else None,
                }
                for page in self.pages
            ],
        }

    def table(self) -> str:
        header = ("page", "stock median / p95 ms", "ours median / p95 ms", "speed-up", "queries stock / ours")
        rows = [header] + [
            (
                page.page,
                f"{page.stock.median_ms:.1f} / {page.stock.p95_ms:.1f}" if page.stock else "n/a",
                f"{page.ours.median_ms:.1f} / {page.ours.p95_ms:.1f}",
                f"{page.speedup:.0f}×" if page.speedup else "n/a",
                f"{page.stock.queries if page.stock else 'n/a'} / {page.ours.queries}",
            )
            for page in self.pages
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths))
        m = self.machine
        lines.append(
            f"machine: {m['cores']} cores, PostgreSQL {m['postgresql']}, Python {m['python']}, "
            f"Django {m['django']}, {m['rows']:,} task rows (and as many stock results), "
            f"median of {m['runs']} runs after {WARMUPS} warm-ups"
        )
        return "\n".join(lines)


def run(
    *,
    rows: int = 1_000_000,
    runs: int = 7,
    database_url: str | None = None,
    name: str = SCRATCH_DATABASE,
    keep: bool = False,
    log: Log = print,
) -> Report:
    """Create (or reuse, if kept with the same rows) the scratch database, fill it, time the pages."""
    if rows < MIN_ROWS or runs < 1:
        raise BenchmarkError(f"Need at least {MIN_ROWS} rows and one run.")
    server = server_settings(database_url)
    version = server_version(server)
    needs_load = _prepare_database(server, name, rows, log)
    try:
        with default_database({**connections.settings[DEFAULT_DB_ALIAS], **server, "NAME": name}):
            call_command("migrate", interactive=False, verbosity=0)
            load_seconds = load(rows, log) if needs_load else {}
            with connection.cursor() as cursor:
                cursor.execute(f"COMMENT ON DATABASE {connection.ops.quote_name(name)} IS %s", [_marker(rows)])
            pages = measure_pages(runs, log)
    finally:
        if not keep:
            drop_database(server, name)
            log(f"Dropped the scratch database {name}.")
    machine = {
        "cores": os.cpu_count(),
        "postgresql": version,
        "python": platform.python_version(),
        "django": django.get_version(),
        "rows": rows,
        "runs": runs,
    }
    return Report(machine, load_seconds, pages)


# The server and the scratch database


def _marker(rows: int) -> str:
    return f"bench_admin: {rows} rows loaded"


def _prepare_database(server: dict, name: str, rows: int, log: Log) -> bool:
    """Reuse a database a --keep run filled with the same rows; otherwise create it afresh.
    True when it must be loaded."""
    with maintenance_cursor(server) as cursor:
        cursor.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [name])
        found = cursor.fetchone()
        if found and found[0] == _marker(rows):
            log(f"Reusing the scratch database {name} ({rows:,} rows, kept by an earlier --keep run).")
            return False
        if found:
            cursor.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    log(f"Created the scratch database {name}.")
    return True


# The data: orders, the task history and the stock results of the same tasks


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
    "chord_id, eta, order_id, periodic_task_name, sent_at, started_at, finished_at, runtime, worker, attempts, "
    "retries, exception_type, exception_message, expected_failure, resolution_note"
)
RESULT_COLUMNS = (
    "id, task_id, periodic_task_name, task_name, task_args, task_kwargs, status, worker, content_type, "
    "content_encoding, result, date_created, date_started, date_done, traceback, meta"
)
ORDER_COLUMNS = (
    "id, number, status, customer_name, email, phone, shipping_address, total, failure_reason, "
    "sales_recorded_at, stock_released_at, created_at, updated_at"
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
                task.order_id or NULL,
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
    with connection.cursor() as cursor:
        # As autovacuum leaves a table in production: statistics, and a visibility map for index-only scans.
        for model in (Order, TaskRecord, TaskResult):
            cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")
    seconds["vacuum analyze"] = round(time.perf_counter() - start, 1)
    log(f"VACUUM ANALYZE in {seconds['vacuum analyze']} s.")
    return seconds


# The pages


@dataclass(frozen=True)
class _Page:
    label: str
    stock_url: str | None
    stock_expects: str
    ours_url: str
    ours_expects: str


def _pages() -> list[_Page]:
    """Each page with a string its response must contain: a benchmark of a broken page proves nothing."""
    stock = reverse("admin:django_celery_results_taskresult_changelist")
    ours = reverse("admin:tasks_admin_taskrecord_changelist")

    def change_url(record: TaskRecord) -> str:
        return reverse("admin:tasks_admin_taskrecord_change", args=[record.pk])

    newest = TaskRecord.objects.first()
    failed = TaskRecord.objects.filter(state=states.FAILURE).first()
    middle = TaskRecord.objects.filter(pk__gte=newest.pk // 2).order_by("pk").first()
    ordered = (
        TaskRecord.objects.filter(pk__gte=newest.pk // 2, order__isnull=False).select_related("order").order_by("pk")
    ).first()
    return [
        _Page("unfiltered", stock, TaskResult.objects.first().task_id, ours, change_url(newest)),
        _Page(
            "state = FAILURE",
            f"{stock}?status__exact={states.FAILURE}",
            TaskResult.objects.filter(status=states.FAILURE).first().task_id,
            f"{ours}?state={states.FAILURE}",
            change_url(failed),
        ),
        _Page(
            "search: task id",
            f"{stock}?q={middle.task_id}",
            middle.task_id,
            f"{ours}?q={middle.task_id}",
            change_url(middle),
        ),
        _Page("search: order number", None, "", f"{ours}?q={ordered.order.number}", change_url(ordered)),
    ]


def _percentile(samples: list[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks (the 'inclusive' method), defined for one sample too."""
    ordered = sorted(samples)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _time_page(client: Client, url: str, expects: str, runs: int) -> Timing:
    def get() -> float:
        start = time.perf_counter()
        response = client.get(url)
        elapsed = time.perf_counter() - start
        if response.status_code != 200 or expects not in response.content.decode():
            raise BenchmarkError(f"{url} answered {response.status_code} without {expects!r}: not a page to time.")
        return elapsed

    with CaptureQueriesContext(connection) as queries:  # a warm-up: capturing costs time
        get()
    query_count = len(queries)  # now: the next request clears the connection's query log
    for _ in range(WARMUPS - 1):
        get()
    samples = [get() * 1000 for _ in range(runs)]
    return Timing(round(statistics.median(samples), 1), round(_percentile(samples, 0.95), 1), query_count)


def measure_pages(runs: int, log: Log) -> list[PageResult]:
    """Render each page as a logged-in superuser, through the whole request handler and template."""
    user, _ = User.objects.update_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True, "password": "!"}
    )
    results = []
    # As in production (DEBUG off: no query log, no template debug); the test client's host allowed.
    with override_settings(DEBUG=False, ALLOWED_HOSTS=["testserver"], SECURE_SSL_REDIRECT=False):
        client = Client()
        client.force_login(user)
        for page in _pages():
            log(f"Timing {page.label} ...")
            stock = _time_page(client, page.stock_url, page.stock_expects, runs) if page.stock_url else None
            results.append(PageResult(page.label, stock, _time_page(client, page.ours_url, page.ours_expects, runs)))
    return results
