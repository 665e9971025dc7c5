"""The stock baseline: the order workflow's canvas shape made of no-op tasks, on a stock Celery
configuration — django-celery-results' database backend (django-db), every other setting at
Celery's default (prefork with one process per core, prefetch 4, early acknowledgement).

    DJANGO_SETTINGS_MODULE=benchmarks.stock_settings celery -A benchmarks.stock_app worker

`python -m benchmarks.stock_app COUNT [RATE]` sends COUNT canvases (RATE a second, or all
at once) and prints, as JSON, each one's callback task id and when it was sent;
`python -m benchmarks.stock_app ticks ORDERS QUEUE,QUEUE,...` queues, for each of ORDERS orders, a
no-op task with its result ignored on each of the queues listed, one per task of an order (the
broker-bound ceiling). With BENCH_SHOP_TRANSPORT set (the ceiling's workers), kombu runs with the
shop's fixes (tasks_admin/kombu_fixes.py), so that the ceiling's broker path is the shop's own.
"""

import functools
import json
import os
import sys
import time
import uuid

import django
import redis
from celery import Celery, chain, chord
from celery.canvas import Signature

from benchmarks import ticks
from tasks_admin import kombu_fixes

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.stock_settings")

app = Celery("stock", broker=os.environ.get("CELERY_BROKER_URL"), backend="django-db")
app.conf.imports = ["benchmarks.sqlcount"]  # counts SQL only when BENCH_SQL_DIR is set
if os.environ.get("BENCH_SHOP_TRANSPORT"):
    kombu_fixes.apply()


@app.task(name="stock.noop")  # the same name when this module runs as __main__ (the sender)
def noop(order_id: str) -> None:
    return None


@app.task(name="stock.tick", ignore_result=True)
def tick(total: int) -> None:
    """The ceiling's no-op: no result stored; a counter in the broker's Redis says when the
    `total`-th has run (one pipelined round trip, what the ceiling costs beyond a no-op)."""
    broker = _redis()
    now = time.time()
    count, _ = broker.pipeline().incr(ticks.COUNT).setnx(ticks.FIRST, now).execute()
    if count == total:
        broker.set(ticks.LAST, now)


@functools.cache
def _redis():
    """The broker's Redis, one client a process (a pool process's own, made after the fork)."""
    return redis.Redis.from_url(app.conf.broker_url)


def send_ticks(orders: int, queues: list[str]) -> None:
    """The ceiling's no-ops for `orders` orders, queued at once: one on each of `queues` an order,
    each task of an order on the queue the shop routes it to (workers drain them:
    benchmarks/workflow.py)."""
    broker = _redis()
    broker.delete(ticks.COUNT, ticks.FIRST, ticks.LAST)
    total = orders * len(queues)
    with app.producer_or_acquire() as producer:
        for _ in range(orders):
            for queue in queues:
                tick.apply_async((total,), producer=producer, queue=queue)


def canvas(order_id: str, callback_id: str) -> Signature:
    """chain(a, b, chord([c, d, e], f)), as orders/workflow.py builds it (immutable signatures)."""
    return chain(
        noop.si(order_id),
        noop.si(order_id),
        chord([noop.si(order_id), noop.si(order_id), noop.si(order_id)], noop.si(order_id).set(task_id=callback_id)),
    )


def send(count: int, rate: float | None = None) -> list[tuple[str, float]]:
    sent, start = [], time.monotonic()
    for n in range(count):
        if rate:
            time.sleep(max(0.0, start + n / rate - time.monotonic()))
        callback_id = str(uuid.uuid4())
        canvas(str(uuid.uuid4()), callback_id).apply_async()
        sent.append((callback_id, time.time()))
    return sent


if __name__ == "__main__":
    django.setup()
    if sys.argv[1] == "ticks":
        send_ticks(int(sys.argv[2]), sys.argv[3].split(","))
    else:
        print(json.dumps(send(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else None)))
