"""The order pipeline against the stock baseline: throughput, latency at half load, and the SQL
each order workflow costs.

Ours: real checkouts (orders/checkout.py, in this process, against the scratch database),
the real workflow through `celery -A shop worker` in the README's production layout, fake
providers with no latency (the demo gateway, the file SMS provider, Django's file e-mail
backend). The baseline: the same canvas shape of no-op tasks through a stock Celery worker
(benchmarks/stock_app.py). Both are measured the same way, from the database: from
the first task to finish to the last callback to finish, over a queue filled beforehand.
"""

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import redis
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import Max, Min
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_results.models import ChordCounter, TaskResult

from orders import workflow as order_workflow
from orders.checkout import Customer, place_order
from orders.models import Order, WorkflowStep
from shop.celery import app as celery_app
from shop.models import Category, Product
from tasks_admin.models import TaskRecord

from . import admin_data, sqlcount, ticks
from .database import BenchmarkError
from .stack import ROOT, Stack
from .stats import percentiles

Log = Callable[[str], None]

# The README's production layout (Procfile): payment and database steps on prefork, e-mail
# and SMS on threads, logging warnings and errors (the task history records every task).
PRODUCTION_WORKERS = (
    ("-Q", "orders,celery", "--pool", "prefork", "--concurrency", "4", "--prefetch-multiplier", "4", "-l", "WARNING"),
    ("-Q", "notifications", "--pool", "threads", "--concurrency", "20", "-l", "WARNING"),
)
PROVIDERS = {"PAYMENT_DEMO_LATENCY": "0", "SMS_PROVIDER": "file"}
STOCK_ENV = {"DJANGO_SETTINGS_MODULE": "benchmarks.stock_settings"}
SKU = "BENCH"
# How often the harness asks whether a drain is done. Drains and latencies are timed from the rows'
# own timestamps, not from this; asked every 0.2 s, its queries over 1,500 ids took 17-18 % of a
# core from the workers under test (top during a drain, 2026-12-04).
POLL_SECONDS = 1.0
PRODUCTS = 50


@dataclass(frozen=True)
class Drain:
    count: int
    seconds: float
    first: float = 0.0  # when the drain began and ended (Unix time), where the records say
    last: float = 0.0

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


def _catalog() -> None:
    """PRODUCTS products in stock for as long as the benchmark buys: orders buy them in turn,
    as a shop's orders spread over its catalog."""
    category, _ = Category.objects.get_or_create(slug="bench", defaults={"name": "Benchmark"})
    for n in range(PRODUCTS):
        Product.objects.update_or_create(
            sku=f"{SKU}-{n}",
            defaults={
                "category": category,
                "name": f"Bench mug {n}",
                "slug": f"bench-mug-{n}",
                "price": Decimal("9.90"),
                "stock": 10**9,
            },
        )


def checkout(n: int) -> tuple[str, float]:
    """One order through the real checkout service; its id and when it was committed."""
    order = place_order(
        customer=Customer(name=f"Bench {n}", email=f"bench{n}@example.com", phone=f"+4479460{n % 100000:05d}"),
        shipping_address=f"{n} Benchmark Road",
        items=[(f"{SKU}-{n % PRODUCTS}", 1)],
        card_number="4242 4242 4242 4242",
    )
    return str(order.pk), time.time()


def _wait_for_orders(order_ids: list[str], timeout: float) -> None:
    """Until every order is confirmed and its steps are recorded (they follow in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        close_old_connections()
        open_orders = Order.objects.filter(pk__in=order_ids).exclude(status=Order.Status.CONFIRMED).count()
        unrecorded = WorkflowStep.objects.filter(order_id__in=order_ids).exclude(state="SUCCESS").count()
        if not open_orders and not unrecorded:
            return
        if Order.objects.filter(pk__in=order_ids, status__in=("failed", "cancelled")).exists():
            raise BenchmarkError("An order of the benchmark failed: see the worker logs.")
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{open_orders} orders not confirmed after {timeout:.0f} s.")
        time.sleep(POLL_SECONDS)


def _wait_for_callbacks(callback_ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while TaskResult.objects.filter(task_id__in=callback_ids, status="SUCCESS").count() < len(callback_ids):
        close_old_connections()
        if time.monotonic() > deadline:
            raise BenchmarkError(f"Stock canvases not done after {timeout:.0f} s.")
        time.sleep(POLL_SECONDS)


def _send_stock(stack: Stack, count: int, rate: float | None = None) -> list[tuple[str, float]]:
    """Stock canvases sent by a stock process (none of the shop's signal handlers runs)."""
    argv = [sys.executable, "-m", "benchmarks.stock_app", str(count)] + ([str(rate)] if rate else [])
    output = subprocess.run(argv, cwd=ROOT, env=stack.env(**STOCK_ENV), capture_output=True, text=True, check=True)
    return [tuple(pair) for pair in json.loads(output.stdout)]


_kept_before: datetime | None = None  # rows older than this are a loaded history: kept (history_size)


def _reset() -> None:
    """Empty the tables a run fills, between measurements (a loaded history stays)."""
    if _kept_before is None:
        with connection.cursor() as cursor:
            for table in ("django_celery_results_taskresult", "django_celery_results_chordcounter"):
                cursor.execute(f"DELETE FROM {table}")
        Order.objects.all().delete()
        return
    TaskResult.objects.filter(date_created__gte=_kept_before).delete()
    ChordCounter.objects.all().delete()
    Order.objects.filter(created_at__gte=_kept_before).delete()


HISTORY_TABLES = (TaskRecord._meta.db_table, TaskResult._meta.db_table)


def load_history(rows: int, log: Log) -> None:
    """Fill the task history and results with `rows` of each (admin_data.py's, over 30 days), then
    set them aside behind empty twins of the same tables: `loaded_history()` puts them in place for a
    measurement, so the history part can alternate its rounds without reloading a million rows."""
    global _kept_before
    TaskRecord.objects.all().delete()
    _reset()
    admin_data.load(rows, log)
    _kept_before = timezone.now()
    with connection.cursor() as cursor:
        _checkpoint(cursor, log)
        for table in HISTORY_TABLES:
            cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_loaded")
            cursor.execute(f"CREATE TABLE {table} (LIKE {table}_loaded INCLUDING ALL)")


def _checkpoint(cursor, log: Log) -> None:
    """Write the load out before the first round: left to the background checkpoint and the
    kernel, it slowed the round after it (41.3 orders/s, against 62-63 for the same history
    two rounds later, in the run of 2026-12-06 13:44). Needs superuser or pg_checkpoint."""
    start = time.perf_counter()
    try:
        cursor.execute("CHECKPOINT")
    except DatabaseError as exc:
        log(f"Could not CHECKPOINT ({str(exc).strip()}); the first round may pay for writing the load out.")
        return
    log(f"CHECKPOINT in {time.perf_counter() - start:.1f} s.")


@contextmanager
def loaded_history() -> Iterator[None]:
    """The loaded history in place of the empty tables (renames, in one transaction each way; the
    workers run only inside). The twins have the same columns, defaults and indexes (LIKE ...
    INCLUDING ALL); foreign keys stay with the loaded tables, and no measurement writes one."""
    _swap_history()
    try:
        yield
    finally:
        _swap_history()


def _swap_history() -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        for table in HISTORY_TABLES:
            cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_swap")
            cursor.execute(f"ALTER TABLE {table}_loaded RENAME TO {table}")
            cursor.execute(f"ALTER TABLE {table}_swap RENAME TO {table}_loaded")


def shop_throughput(
    stack: Stack, orders: int, workers: Sequence[Sequence[str]] = PRODUCTION_WORKERS, **env: str
) -> Drain:
    """Orders placed with no worker running, then drained by the workers."""
    _reset()
    _catalog()
    order_ids = [checkout(n)[0] for n in range(orders)]
    started = stack.workers(workers, **PROVIDERS, **env)
    try:
        _wait_for_orders(order_ids, timeout=60 + orders)
    finally:
        stack.stop(*started)
    return drain_of(order_ids)


def drain_of(order_ids: list[str]) -> Drain:
    """The orders ÷ (the last confirmation − the first step finished), from the steps' records."""
    steps = WorkflowStep.objects.filter(order_id__in=order_ids)
    first = steps.aggregate(t=Min("finished_at"))["t"]
    last = steps.filter(name="confirm_order").aggregate(t=Max("finished_at"))["t"]
    return Drain(len(order_ids), (last - first).total_seconds(), first.timestamp(), last.timestamp())


def stock_throughput(stack: Stack, canvases: int, **env: str) -> Drain:
    """Stock canvases queued with no worker running, then drained by a stock worker."""
    _reset()
    callback_ids = [callback for callback, _ in _send_stock(stack, canvases)]
    worker = stack.worker(app="benchmarks.stock_app", **STOCK_ENV, **env)
    try:
        _wait_for_callbacks(callback_ids, timeout=60 + canvases)
    finally:
        stack.stop(worker)
    first = TaskResult.objects.aggregate(t=Min("date_done"))["t"]
    last = TaskResult.objects.filter(task_id__in=callback_ids).aggregate(t=Max("date_done"))["t"]
    return Drain(canvases, (last - first).total_seconds())


def shop_latency(stack: Stack, rate: float, seconds: float) -> dict[str, float]:
    """Checkout commit → order confirmed, for orders placed at `rate` a second while the workers run."""
    _reset()
    _catalog()
    started = stack.workers(PRODUCTION_WORKERS, **PROVIDERS)
    try:
        placed, start = [], time.monotonic()
        for n in range(int(rate * seconds)):
            time.sleep(max(0.0, start + n / rate - time.monotonic()))
            placed.append(checkout(n))
        order_ids = [order_id for order_id, _ in placed]
        _wait_for_orders(order_ids, timeout=120)
    finally:
        stack.stop(*started)
    steps = WorkflowStep.objects.filter(order_id__in=order_ids, name="confirm_order")
    confirmed = {str(order_id): at for order_id, at in steps.values_list("order_id", "finished_at")}
    return percentiles([confirmed[order_id].timestamp() - at for order_id, at in placed])


def stock_latency(stack: Stack, rate: float, seconds: float) -> dict[str, float]:
    """Canvas sent → its callback's result stored, for canvases sent at `rate` a second."""
    _reset()
    worker = stack.worker(app="benchmarks.stock_app", **STOCK_ENV)
    try:
        sent = _send_stock(stack, int(rate * seconds), rate)
        _wait_for_callbacks([callback for callback, _ in sent], timeout=120)
    finally:
        stack.stop(worker)
    done = dict(TaskResult.objects.filter(task_id__in=[c for c, _ in sent]).values_list("task_id", "date_done"))
    return percentiles([done[callback].timestamp() - at for callback, at in sent])


def order_queues() -> list[str]:
    """The queue of each of an order's six tasks (charge, shipment, sales, confirmation, e-mail,
    SMS), as the shop routes them: four to the orders worker, two to the notifications worker."""
    steps = (*order_workflow.STEPS, *order_workflow.MESSAGES)
    return [celery_app.amqp.router.route({}, order_workflow.task_name(step))["queue"].name for step in steps]


def ceiling(stack: Stack, orders: int) -> Drain:
    """The broker-bound ceiling: six no-op tasks an order, results ignored, each on the queue the
    shop routes that task to, queued at once and drained by the stock app on the production
    layout (both workers), with the shop's kombu (benchmarks/stock_app.py: tick,
    BENCH_SHOP_TRANSPORT); orders ÷ (last run − first run)."""
    subprocess.run(
        [sys.executable, "-m", "benchmarks.stock_app", "ticks", str(orders), ",".join(order_queues())],
        cwd=ROOT,
        env=stack.env(**STOCK_ENV),
        check=True,
    )
    broker = redis.Redis(port=stack.redis_port)
    workers = stack.workers(PRODUCTION_WORKERS, app="benchmarks.stock_app", BENCH_SHOP_TRANSPORT="1", **STOCK_ENV)
    try:
        deadline = time.monotonic() + 60 + orders
        while not broker.get(ticks.LAST):
            if time.monotonic() > deadline:
                raise BenchmarkError(f"The ceiling's no-op tasks not done after {60 + orders} s.")
            time.sleep(POLL_SECONDS)
    finally:
        stack.stop(*workers)
    first, last = (float(broker.get(key)) for key in (ticks.FIRST, ticks.LAST))
    return Drain(orders, last - first)


@dataclass(frozen=True)
class SqlCost:
    statements: float  # per order workflow (or canvas), in the workers
    write_transactions: float
    provider_write_transactions: float  # of which the demo payment provider's ledger
    checkout_statements: float  # per checkout, in the web process (ours only)
    by_task: dict[str, float]


def shop_sql(stack: Stack, orders: int, directory: Path) -> SqlCost:
    """SQL the workers send per order workflow, counted in every worker process (sqlcount)."""
    _reset()
    _catalog()
    directory.mkdir(parents=True, exist_ok=True)
    with CaptureQueriesContext(connection) as checkout_queries:
        order_ids = [checkout(n)[0] for n in range(orders)]
    env = {"BENCH_SQL_DIR": str(directory), "CELERY_EXTRA_IMPORTS": "benchmarks.sqlcount", **PROVIDERS}
    started = stack.workers(PRODUCTION_WORKERS, **env)
    try:
        _wait_for_orders(order_ids, timeout=60 + orders)
    finally:
        stack.stop(*started)  # each process writes its counts as it exits
    counts = sqlcount.read(directory)
    return SqlCost(
        statements=counts["statements"] / orders,
        write_transactions=counts["write transactions"] / orders,
        provider_write_transactions=counts["provider write transactions"] / orders,
        checkout_statements=len(checkout_queries) / orders,
        by_task={name.removeprefix("task."): n / orders for name, n in counts.items() if name.startswith("task.")},
    )


def stock_sql(stack: Stack, canvases: int, directory: Path) -> SqlCost:
    _reset()
    directory.mkdir(parents=True, exist_ok=True)
    callback_ids = [callback for callback, _ in _send_stock(stack, canvases)]
    worker = stack.worker(app="benchmarks.stock_app", BENCH_SQL_DIR=str(directory), **STOCK_ENV)
    try:
        _wait_for_callbacks(callback_ids, timeout=60 + canvases)
    finally:
        stack.stop(worker)
    counts = sqlcount.read(directory)
    return SqlCost(
        statements=counts["statements"] / canvases,
        write_transactions=counts["write transactions"] / canvases,
        provider_write_transactions=0.0,
        checkout_statements=0.0,
        by_task={},
    )
