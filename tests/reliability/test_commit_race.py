"""8. Orders placed inside larger transactions — as a caller that does more after checkout would.

place_order sends the workflow with transaction.on_commit, so the outermost transaction
decides: one that rolls back must run nothing (no task, no result, stock untouched), and one
that commits seconds after place_order must never let a worker look for rows it cannot see yet.
"""

import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from django.db import connections, transaction
from django_celery_results.models import TaskResult

from orders.checkout import Customer, place_order
from orders.models import Order, WorkflowStep
from shop.celery import app
from shop.models import Product
from tasks_admin.models import TaskRecord
from tests.factories import make_product

from .scenarios import GOOD_CARD

SLOW, FAST, ROLLED_BACK = 30, 20, 10  # orders; the slow ones commit 1–2 s after place_order
STOCK = 10


class RolledBack(Exception):
    """Raised inside the caller's transaction after place_order: everything is undone."""


@dataclass(frozen=True)
class Placement:
    kind: str  # slow | fast | rolled back
    order_id: str
    task_ids: tuple[str, ...]
    sku: str


def _drop_broker_pools() -> None:
    """Forget the connections to the previous broker (Celery keeps them in pools)."""
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def publish_to(monkeypatch) -> Iterator[Callable[[str], None]]:
    """Point this process's Celery app at a stack's broker, as the web server's is; restored afterwards."""
    previous = app.conf.get("broker_url")

    def point(url: str) -> None:
        monkeypatch.setenv("CELERY_BROKER_URL", url)  # Celery reads the environment first
        app.conf.broker_url = url
        _drop_broker_pools()

    yield point
    app.conf.broker_url = previous
    _drop_broker_pools()


def place(kind: str, n: int, product: Product, pause: float) -> Placement:
    """Check out inside an outer transaction that stays open `pause` seconds after place_order."""
    customer = Customer(name=f"Race {n}", email=f"race{n}@example.com", phone=f"+4479462{n:05d}")
    try:
        with transaction.atomic():
            order = place_order(
                customer=customer, shipping_address=f"{n} Race Street", items=[(product.sku, 1)], card_number=GOOD_CARD
            )
            placement = Placement(
                kind, str(order.pk), tuple(order.steps.values_list("task_id", flat=True)), product.sku
            )
            time.sleep(pause)
            if kind == "rolled back":
                raise RolledBack
    except RolledBack:
        pass
    finally:
        connections.close_all()  # this thread's connection
    return placement


def test_a_rolled_back_checkout_runs_nothing_and_a_slow_commit_never_misses_its_rows(make_stack, publish_to, record):
    stack = make_stack()
    stack.start(workers=1, web=False)
    publish_to(stack.broker_url)
    rng = random.Random(8)
    plan = [("slow", 1 + rng.random()) for _ in range(SLOW)] + [("fast", 0.0)] * FAST
    plan += [("rolled back", rng.random() * 2) for _ in range(ROLLED_BACK)]
    rng.shuffle(plan)
    # One product per order: a transaction held open keeps its product's row locked.
    products = [make_product(stock=STOCK, name=f"Race Mug {n}") for n in range(len(plan))]

    with ThreadPoolExecutor(20) as pool:
        placements = list(pool.map(lambda job: place(job[1][0], job[0], products[job[0]], job[1][1]), enumerate(plan)))
    committed = [p.order_id for p in placements if p.kind != "rolled back"]
    undone = [p for p in placements if p.kind == "rolled back"]
    stack.wait_until_final(committed, timeout=60)

    audit = stack.audit(committed)
    statuses = {str(pk): status for pk, status in Order.objects.filter(pk__in=committed).values_list("pk", "status")}
    undone_tasks = [task_id for p in undone for task_id in p.task_ids]
    stock = dict(Product.objects.values_list("sku", "stock"))
    missing_rows = TaskRecord.objects.filter(exception_type__contains="DoesNotExist").count()
    logs = "\n".join(worker.log() for worker in stack.workers)
    ran_for_undone = (
        TaskRecord.objects.filter(task_id__in=undone_tasks).count()
        + TaskRecord.objects.about_any(Order, [p.order_id for p in undone]).count()
        + TaskResult.objects.filter(task_id__in=undone_tasks).count()
        + sum(task_id in logs for task_id in undone_tasks)
    )
    record(
        "8. commit race",
        audit.figures(),
        faults=f"{len(plan)} checkouts inside the caller's transaction: {SLOW} committed 1–2 s after place_order, "
        f"{FAST} at once, {ROLLED_BACK} rolled back after it (0–2 s later)",
        notes=f"rolled back: {ran_for_undone} tasks, results or history rows, stock untouched; "
        f"slow commits: {sum(statuses[p.order_id] == 'confirmed' for p in placements if p.kind == 'slow')}/{SLOW} "
        f"confirmed; {missing_rows} tasks failed on a missing row",
    )

    assert audit.confirmed == len(committed) == SLOW + FAST, audit
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)
    # Rolled back: the order never existed, nothing was sent or ran, its unit is still on sale.
    assert not Order.objects.filter(pk__in=[p.order_id for p in undone]).exists()
    assert not WorkflowStep.objects.filter(task_id__in=undone_tasks).exists()
    assert ran_for_undone == 0
    assert all(stock[p.sku] == STOCK for p in undone)
    assert all(stock[p.sku] == STOCK - 1 for p in placements if p.kind != "rolled back")
    # Committed late: no task ever looked for a row before it was committed.
    assert missing_rows == 0
    assert "DoesNotExist" not in logs
