"""The stock baseline: the order workflow's canvas shape made of no-op tasks, on a stock Celery
configuration — django-celery-results' database backend (django-db), every other setting at
Celery's default (prefork with one process per core, prefetch 4, early acknowledgement).

    DJANGO_SETTINGS_MODULE=shop.benchmarks.stock_settings celery -A shop.benchmarks.stock_app worker
"""

import os

from celery import Celery, chain, chord

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.benchmarks.stock_settings")

app = Celery("stock", broker=os.environ.get("CELERY_BROKER_URL"), backend="django-db")
app.conf.imports = ["shop.benchmarks.sqlcount"]  # counts SQL only when BENCH_SQL_DIR is set


@app.task
def noop(order_id: str) -> None:
    return None


def canvas(order_id: str, callback_id: str):
    """chain(a, b, chord([c, d, e], f)), as orders/workflow.py builds it (immutable signatures)."""
    return chain(
        noop.si(order_id),
        noop.si(order_id),
        chord([noop.si(order_id), noop.si(order_id), noop.si(order_id)], noop.si(order_id).set(task_id=callback_id)),
    )
