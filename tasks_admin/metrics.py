"""What the task dashboard shows: read from the task history, the broker and the workers.

Database reads stay portable (SQLite and PostgreSQL): counts are grouped per minute with
Trunc, and percentiles are computed in Python from a bounded sample because SQLite has no
percentile function. Broker reads use short timeouts and report an unreachable broker
instead of raising, so the page still renders when the broker is down.
"""

import json
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from celery import Celery, states
from django.conf import settings
from django.db.models import Count, F, Q, QuerySet, Window
from django.db.models.functions import RowNumber, Trunc
from kombu import Connection
from kombu.exceptions import OperationalError

from .models import TaskRecord

logger = logging.getLogger(__name__)

FINISHED_STATES = (states.SUCCESS, states.FAILURE)
# Latest runtimes per task name the percentiles are computed from: bounds memory and time.
RUNTIME_SAMPLE = 5000
# Seconds: for connecting to the broker, and for workers to answer a broadcast.
BROKER_TIMEOUT = 1.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Bucket:
    start: datetime
    succeeded: int
    failed: int


@dataclass(frozen=True)
class TaskStats:
    task_name: str
    runs: int
    failures: int
    p50: float | None
    p95: float | None

    @property
    def failure_rate(self) -> float:
        """Percent of runs that failed."""
        return 100 * self.failures / self.runs if self.runs else 0.0


@dataclass(frozen=True)
class QueueDepth:
    name: str
    messages: int  # waiting in the broker
    recorded: int = 0  # queued in the task history
    # The task ids of the messages next in line (one per priority list on Redis): the oldest
    # message's age is its send time in the task history (a Celery message carries none).
    next_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    pool: str
    concurrency: int | None
    active: int | None


@dataclass(frozen=True)
class BrokerView:
    queues: list[QueueDepth]
    workers: list[WorkerInfo]


def throughput(*, now: datetime, span: timedelta, step: timedelta) -> list[Bucket]:
    """Tasks that succeeded and failed per `step`, over the `span` that ends with the step holding `now`.

    SQL counts per minute (a range on the finished_at index, one row per minute however many
    tasks ran); Python folds minutes into steps and fills empty steps. Steps are aligned to
    UTC multiples of `step`, so a 15-minute step starts at :00, :15, …
    """
    end = _EPOCH + ((now - _EPOCH) // step + 1) * step
    start = end - span
    succeeded, failed = [0] * (span // step), [0] * (span // step)
    rows = (
        _finished_between(start, end)
        .annotate(minute=Trunc("finished_at", "minute", tzinfo=UTC))
        .values("minute")
        .annotate(
            succeeded=Count("id", filter=Q(state=states.SUCCESS)), failed=Count("id", filter=Q(state=states.FAILURE))
        )
        .order_by()
    )
    for row in rows:
        index = (row["minute"] - start) // step
        succeeded[index] += row["succeeded"]
        failed[index] += row["failed"]
    return [Bucket(start + i * step, ok, ko) for i, (ok, ko) in enumerate(zip(succeeded, failed, strict=True))]


def totals(buckets: Sequence[Bucket]) -> dict[str, int]:
    """Succeeded and failed over a whole chart: its legend and the page's summary tiles."""
    return {
        "succeeded": sum(bucket.succeeded for bucket in buckets),
        "failed": sum(bucket.failed for bucket in buckets),
    }


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between the closest ranks (numpy's default), None without values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def task_stats(*, since: datetime, until: datetime, sample: int = RUNTIME_SAMPLE) -> list[TaskStats]:
    """Runs (succeeded or failed), failures and p50/p95 runtime per task name, busiest first.

    Two queries over the finished_at range: the counts, and each task's latest `sample`
    timed records (ROW_NUMBER per task name, so the transfer stays bounded).
    """
    recent = _finished_between(since, until)
    counts = (
        recent.values("task_name")
        .annotate(
            runs=Count("id", filter=Q(state__in=FINISHED_STATES)), failures=Count("id", filter=Q(state=states.FAILURE))
        )
        .filter(runs__gt=0)
        .order_by("-runs", "task_name")
    )
    latest = (
        recent.filter(runtime__isnull=False)
        .annotate(rank=Window(RowNumber(), partition_by=[F("task_name")], order_by=F("finished_at").desc()))
        .filter(rank__lte=sample)
        .order_by()
        .values_list("task_name", "state", "runtime")
    )
    runtimes: dict[str, list[float]] = defaultdict(list)
    for task_name, state, runtime in latest:
        if state in FINISHED_STATES:  # not a task waiting to be retried
            runtimes[task_name].append(runtime)
    return [
        TaskStats(
            row["task_name"],
            row["runs"],
            row["failures"],
            percentile(runtimes[row["task_name"]], 0.5),
            percentile(runtimes[row["task_name"]], 0.95),
        )
        for row in counts
    ]


def queued_by_queue() -> dict[str, int]:
    """Tasks the history shows queued (sent, not started), per queue: next to the broker's own
    count on the dashboard, so a message lost by the broker, or a record left queued, shows."""
    rows = TaskRecord.objects.filter(state=states.PENDING).order_by().values_list("queue").annotate(n=Count("id"))
    return dict(rows)


def dead_letter_count() -> int:
    return TaskRecord.objects.dead_letters().count()


def _finished_between(start: datetime, end: datetime) -> QuerySet[TaskRecord]:
    """Records finished in [start, end). The state is left to conditional aggregates: given
    `state IN (…)` SQLite, which keeps no statistics, scans the state index instead of this range."""
    return TaskRecord.objects.filter(finished_at__gte=start, finished_at__lt=end)


def read_broker(app: Celery, peek: bool = False) -> BrokerView | None:
    """Queue depths from the broker and the workers that answer within BROKER_TIMEOUT; None if
    unreachable. With `peek`, each queue's next task ids too (for /metrics' oldest message age)."""
    conn = app.connection_for_read(
        connect_timeout=BROKER_TIMEOUT,
        # Redis: bound socket connects and reads too (the AMQP transport ignores these); reads
        # outlast the 1 s BRPOP that waits for the workers' replies.
        transport_options={"socket_connect_timeout": BROKER_TIMEOUT, "socket_timeout": BROKER_TIMEOUT + 1},
    )
    try:
        with conn:
            conn.ensure_connection(max_retries=0)
            return BrokerView(queues=_queue_depths(conn, peek), workers=_workers(app, conn))
    except (OperationalError, *conn.connection_errors) as exc:
        logger.warning("Task dashboard: broker unreachable: %s", exc)
        return None


def _queue_depths(conn: Connection, peek: bool = False) -> list[QueueDepth]:
    """Messages waiting per configured queue; with `peek`, the ids of the next ones as well."""
    depths = []
    for queue in settings.CELERY_TASK_QUEUES:
        # A channel per queue: on AMQP a passive declare of a missing queue closes its channel.
        with conn.channel() as channel:
            try:
                _, messages, _ = channel.queue_declare(queue=queue.name, passive=True)
            except conn.channel_errors:
                messages = 0  # never declared, or (Redis) empty: nothing waiting
            next_ids = _next_task_ids(conn, channel, queue.name) if peek and messages else ()
        depths.append(QueueDepth(queue.name, messages, next_ids=next_ids))
    return depths


def _next_task_ids(conn: Connection, channel, queue: str) -> tuple[str, ...]:
    """The task ids at the head of `queue`, read without taking the messages.

    Redis: kombu pushes on the left of one list per priority step and pops from the right, so
    each list's oldest message is its last element. AMQP: the head message is fetched
    unacknowledged and rejected with requeue, which puts it back in its place.
    """
    if conn.transport.driver_type == "redis":
        keys = [channel._q_for_pri(queue, priority) for priority in channel.priority_steps]
        raw = [channel.client.lindex(key, -1) for key in dict.fromkeys(keys)]
        return tuple(filter(None, (json.loads(item).get("headers", {}).get("id") for item in raw if item)))
    if conn.transport.driver_type == "amqp":
        message = channel.basic_get(queue=queue, no_ack=False)
        if message is None:
            return ()
        channel.basic_reject(message.delivery_tag, requeue=True)
        task_id = (message.headers or {}).get("id")
        return (task_id,) if task_id else ()
    return ()


def _workers(app: Celery, conn: Connection) -> list[WorkerInfo]:
    stats = app.control.inspect(timeout=BROKER_TIMEOUT, connection=conn).stats() or {}
    if not stats:
        return []
    # Asked only of the workers that answered, so it returns as soon as they all have.
    active = (
        app.control.inspect(timeout=BROKER_TIMEOUT, connection=conn, destination=list(stats), limit=len(stats)).active()
        or {}
    )
    workers = []
    for name, info in sorted(stats.items()):
        pool = info.get("pool") or {}
        # "celery.concurrency.prefork:TaskPool" → "prefork"
        implementation = (pool.get("implementation") or "").partition(":")[0].rpartition(".")[2]
        tasks = active.get(name)
        workers.append(
            WorkerInfo(name, implementation, pool.get("max-concurrency"), len(tasks) if tasks is not None else None)
        )
    return workers
