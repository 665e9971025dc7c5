"""The task layer's series for /metrics, read at scrape time from the task history, the broker
and the beat lease, so they are the same whichever web process answers and however many
worker processes ran the tasks (nothing is counted in a process's memory).

The task counter and histograms come from the tally of finished runs (tasks_admin/tally.py):
a scrape costs what the last few minutes' runs cost however large the history, and the daily
cleanup does not lower them. Proven by tests/functional/test_metrics.py and tests/integration/test_prometheus_scrape.py.
"""

from collections.abc import Iterator

from celery import current_app, states
from django.db.models import Max
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from . import metrics, periodic, tally
from .models import SchedulerLock, TaskRecord

# A failure the task declares as an outcome (Task.throws): counted apart, so that declined
# cards do not count in the failure-rate alert (docs/prometheus/alerts.yml).
EXPECTED_FAILURE = "EXPECTED_FAILURE"


class TaskCollector:
    """Tasks by name and final state, their runtime and queue wait, the broker's queues and
    workers, dead letters, periodic jobs and the beat lease."""

    def collect(self) -> Iterator[Metric]:
        yield from task_series()
        yield GaugeMetricFamily(
            "celery_dead_letters", "Tasks failed for good and not dealt with yet", value=metrics.dead_letter_count()
        )
        yield from broker_series()
        yield from periodic_series()
        yield from beat_series()


def task_series() -> Iterator[Metric]:
    """The counter and both histograms, from the tally of finished runs (tasks_admin/tally.py)."""
    total = CounterMetricFamily(
        "celery_tasks",
        "Tasks finished, by name and final state (EXPECTED_FAILURE: an outcome it declares, e.g. a declined card)",
        labels=["task", "state"],
    )
    runtime = HistogramMetricFamily(
        "celery_task_runtime_seconds", "Time a finished task ran (its last attempt)", labels=["task"]
    )
    wait = HistogramMetricFamily(
        "celery_task_queue_wait_seconds", "Time from sending a task to a worker starting it", labels=["task"]
    )
    by_state: dict[tuple[str, str], int] = {}
    by_task: dict[str, tally.Sums] = {}
    for (name, state, expected), sums in sorted(tally.counts().items()):
        label = EXPECTED_FAILURE if expected and state == states.FAILURE else state
        by_state[name, label] = by_state.get((name, label), 0) + sums.runs
        by_task.setdefault(name, tally.Sums()).add(sums)
    for (name, label), runs in by_state.items():
        total.add_metric([name, label], runs)
    for name, sums in by_task.items():
        runtime.add_metric(
            [name], _buckets(tally.RUNTIME_BUCKETS, sums.runtime_buckets, sums.runtime_count), sums.runtime_sum
        )
        wait.add_metric([name], _buckets(tally.WAIT_BUCKETS, sums.wait_buckets, sums.wait_count), sums.wait_sum)
    yield total
    yield runtime
    yield wait


def _buckets(bounds: tuple, cumulative: list[int], count: int) -> list[tuple[str, int]]:
    return [*((str(float(bound)), n) for bound, n in zip(bounds, cumulative, strict=True)), ("+Inf", count)]


def broker_series() -> Iterator[Metric]:
    """Queue depth and oldest message per queue, and the workers that answer (metrics.read_broker)."""
    broker = metrics.read_broker(current_app, peek=True)
    yield GaugeMetricFamily("celery_broker_up", "1 if the broker answered this scrape", value=int(broker is not None))
    if broker is None:
        return
    depth = GaugeMetricFamily("celery_queue_messages", "Messages waiting in the broker", labels=["queue"])
    age = GaugeMetricFamily(
        "celery_queue_oldest_message_age_seconds",
        "Age of the oldest message waiting in the broker (0 when empty), from its send time in the task history",
        labels=["queue"],
    )
    sent = dict(
        TaskRecord.objects.filter(task_id__in=[i for q in broker.queues for i in q.next_ids]).values_list(
            "task_id", "sent_at"
        )
    )
    now = timezone.now()
    for queue in broker.queues:
        depth.add_metric([queue.name], queue.messages)
        times = [sent[i] for i in queue.next_ids if i in sent]
        if times or not queue.messages:
            age.add_metric([queue.name], (now - min(times)).total_seconds() if times else 0.0)
    yield depth
    yield age
    yield GaugeMetricFamily(
        "celery_workers_up", "Workers that answered a broadcast this scrape", value=len(broker.workers)
    )
    worker = GaugeMetricFamily("celery_worker_up", "1 for each worker that answered", labels=["worker", "pool"])
    for info in broker.workers:
        worker.add_metric([info.name, info.pool], 1)
    yield worker


def periodic_series() -> Iterator[Metric]:
    """For each enabled periodic job: its last successful run, and how late beat is sending it."""
    jobs = list(PeriodicTask.objects.filter(enabled=True).select_related("interval", "crontab"))
    succeeded = dict(
        TaskRecord.objects.filter(periodic_task_name__in=[job.name for job in jobs], state=states.SUCCESS)
        .values("periodic_task_name")
        .annotate(last=Max("finished_at"))
        .values_list("periodic_task_name", "last")
        .order_by()
    )
    last = GaugeMetricFamily(
        "celery_periodic_last_success_timestamp_seconds",
        "When the job's last run succeeded (Unix time), for jobs that have succeeded",
        labels=["job"],
    )
    late = GaugeMetricFamily(
        "celery_periodic_lateness_seconds",
        "How long ago beat should have sent the job's next run (0 while it is not due)",
        labels=["job"],
    )
    now = timezone.now()
    for job in jobs:
        if job.name in succeeded:
            last.add_metric([job.name], succeeded[job.name].timestamp())
        due = periodic.due_at(job, now)
        if due is not None:
            late.add_metric([job.name], max((now - due).total_seconds(), 0.0))
    yield last
    yield late


def beat_series() -> Iterator[Metric]:
    """Whether a beat holds the scheduler lease (tasks_admin/beat.py), and which."""
    now = timezone.now()
    leases = list(SchedulerLock.objects.filter(expires_at__gt=now))
    yield GaugeMetricFamily("celery_beat_lease_up", "1 while a beat holds the scheduler lease", value=int(bool(leases)))
    owner = GaugeMetricFamily("celery_beat_lease_owner", "1 for the beat holding the lease", labels=["lease", "owner"])
    for lease in leases:
        owner.add_metric([lease.name, lease.owner], 1)
    yield owner
