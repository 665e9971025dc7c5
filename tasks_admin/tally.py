"""Finished runs, counted once: what /metrics' task counter and histograms are made of.

Aggregating the whole task history at every scrape cost 1.8 s at 1,000,000 records on the
benchmark machine, and grew with the history (TASK_HISTORY_DAYS of it). Instead, `settle()`
folds a record into TaskTally once, SETTLE_AFTER after it finished (its last fields written by
then), and marks it `tallied` in the same transaction; a scrape reads the tally and aggregates
only the records not folded yet, which a partial index finds (`counts()`). So a scrape costs
what the last few minutes' runs cost, whatever the history holds; the cleanup deleting old
records no longer lowers the counters; and a record written late (a worker that lost its
database for a while) is still counted, once. A run started again under the same task id
(redelivered) is unmarked when it starts (history.record_started) and counted again when it
ends: the counter counts runs. Proven by tests/functional/test_metrics.py.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum
from django.utils import timezone

from .models import FINAL_STATES, TaskRecord, TaskTally
from .sql import read_tally

RUNTIME_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
SETTLE_AFTER = timedelta(minutes=1)
BATCH_SIZE = 5000

Outcome = tuple[str, str, bool]  # task name, state, expected failure


@dataclass
class Sums:
    """One outcome's runs: how many, and their runtime and queue-wait histograms (cumulative)."""

    runs: int = 0
    runtime_count: int = 0
    runtime_sum: float = 0.0
    runtime_buckets: list[int] = field(default_factory=lambda: [0] * len(RUNTIME_BUCKETS))
    wait_count: int = 0
    wait_sum: float = 0.0
    wait_buckets: list[int] = field(default_factory=lambda: [0] * len(WAIT_BUCKETS))

    def add(self, other: "Sums") -> None:
        self.runs += other.runs
        self.runtime_count += other.runtime_count
        self.runtime_sum += other.runtime_sum
        self.runtime_buckets = [a + b for a, b in zip(self.runtime_buckets, other.runtime_buckets, strict=True)]
        self.wait_count += other.wait_count
        self.wait_sum += other.wait_sum
        self.wait_buckets = [a + b for a, b in zip(self.wait_buckets, other.wait_buckets, strict=True)]


def untallied() -> QuerySet:
    return TaskRecord.objects.filter(state__in=FINAL_STATES, tallied=False)


def aggregate(records: QuerySet) -> dict[Outcome, Sums]:
    """The records' runs by outcome, in one pass."""
    wait = ExpressionWrapper(F("started_at") - F("sent_at"), output_field=DurationField())
    rows = (
        records.alias(wait=wait)
        .order_by()
        .values("task_name", "state", "expected_failure")
        .annotate(
            n=Count("*"),
            runtime_count=Count("runtime"),
            runtime_sum=Sum("runtime"),
            wait_count=Count("id", filter=Q(started_at__isnull=False)),
            wait_sum=Sum("wait"),
            **{f"r{i}": Count("id", filter=Q(runtime__lte=bound)) for i, bound in enumerate(RUNTIME_BUCKETS)},
            **{
                f"w{i}": Count("id", filter=Q(wait__lte=timedelta(seconds=bound)))
                for i, bound in enumerate(WAIT_BUCKETS)
            },
        )
    )
    return {
        (row["task_name"], row["state"], row["expected_failure"]): Sums(
            runs=row["n"],
            runtime_count=row["runtime_count"],
            runtime_sum=row["runtime_sum"] or 0.0,
            runtime_buckets=[row[f"r{i}"] for i in range(len(RUNTIME_BUCKETS))],
            wait_count=row["wait_count"],
            wait_sum=row["wait_sum"].total_seconds() if row["wait_sum"] is not None else 0.0,
            wait_buckets=[row[f"w{i}"] for i in range(len(WAIT_BUCKETS))],
        )
        for row in rows
    }


def settle(now: datetime | None = None, batch_size: int = BATCH_SIZE, max_batches: int | None = None) -> int:
    """Fold the records that finished SETTLE_AFTER ago or earlier into the tally, a batch per
    transaction (several processes may run it at once: each takes rows the others have not
    locked); return how many were folded."""
    cutoff = (now or timezone.now()) - SETTLE_AFTER
    settled = batches = 0
    while max_batches is None or batches < max_batches:
        with transaction.atomic():
            ids = list(
                untallied()
                .filter(Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True, sent_at__lt=cutoff))
                .order_by()
                .select_for_update(skip_locked=True)
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                break
            # In one order: two folds at once lock the tally's rows alike, never each other's first.
            for outcome, sums in sorted(aggregate(TaskRecord.objects.filter(pk__in=ids)).items()):
                _fold(outcome, sums)
            TaskRecord.objects.filter(pk__in=ids).update(tallied=True)
        settled += len(ids)
        batches += 1
    return settled


def _fold(outcome: Outcome, sums: Sums) -> None:
    name, state, expected = outcome
    tally, _ = TaskTally.objects.select_for_update().get_or_create(
        task_name=name, state=state, expected_failure=expected
    )
    total = _sums_of(tally)
    total.add(sums)
    for column, value in vars(total).items():
        setattr(tally, column, value)
    tally.save()


def _sums_of(tally: TaskTally) -> Sums:
    """A tally row's figures (a row just created has empty bucket lists)."""
    return Sums(
        tally.runs,
        tally.runtime_count,
        tally.runtime_sum,
        tally.runtime_buckets or [0] * len(RUNTIME_BUCKETS),
        tally.wait_count,
        tally.wait_sum,
        tally.wait_buckets or [0] * len(WAIT_BUCKETS),
    )


def counts(settle_first: int | None = 10) -> dict[Outcome, Sums]:
    """Every finished run by outcome: the tally plus the records not folded into it yet, read
    from one snapshot (a concurrent settle() moves records from one to the other). First
    folds up to `settle_first` batches, so that a scrape keeps the unfolded part small; a
    failure to fold is logged and the figures are still whole."""

    def read() -> dict[Outcome, Sums]:
        totals = {(t.task_name, t.state, t.expected_failure): _sums_of(t) for t in TaskTally.objects.all()}
        for outcome, sums in aggregate(untallied()).items():
            totals.setdefault(outcome, Sums()).add(sums)
        return totals

    return read_tally((lambda: settle(max_batches=settle_first)) if settle_first else None, read, "finished runs")
