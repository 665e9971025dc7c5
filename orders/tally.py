"""Workflow steps settled, counted once: what /metrics' shop_order_steps_total is made of.

Counting the steps by outcome at every scrape cost 1.08 s at 1,000,000 orders (4,000,000 steps;
4.7 ms from the tally, `python -m benchmarks admin`) and grew with the shop; and since a step's
outcome can change (a failure that succeeds once staff continue the order), those counts could
go down, which Prometheus reads as a counter reset.
Instead `settle()` adds the steps settled since the last fold into StepTally and marks them
`tallied` in the same transaction, and a scrape reads the tally plus the few steps not folded
yet, which a partial index finds (`counts()`). Each settlement writes `tallied = false` with the
outcome (orders/services.py), so a step settled again is counted again: the counter counts
settlements and never goes down. The same design as the task layer's tally
(tasks_admin/tally.py). Proven by tests/functional/test_metrics.py.
"""

from django.db import transaction
from django.db.models import Count, F, QuerySet

from tasks_admin.sql import read_tally

from .models import StepTally, WorkflowStep

BATCH_SIZE = 5000

Outcome = tuple[str, str]  # step name, state


def untallied() -> QuerySet:
    return WorkflowStep.objects.exclude(state=WorkflowStep.State.PENDING).filter(tallied=False)


def by_outcome(steps: QuerySet) -> dict[Outcome, int]:
    rows = steps.order_by().values_list("name", "state").annotate(n=Count("id"))
    return {(name, state): n for name, state, n in rows}


def settle(batch_size: int = BATCH_SIZE, max_batches: int | None = None) -> int:
    """Fold the settled steps not counted yet into the tally, a batch per transaction (several
    web processes may scrape at once: each takes rows the others have not locked, and a step
    being settled again is left for the next fold); return how many were folded."""
    folded = batches = 0
    while max_batches is None or batches < max_batches:
        with transaction.atomic():
            ids = list(
                untallied().order_by().select_for_update(skip_locked=True).values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                break
            # In one order: two folds at once lock the tally's rows alike, never each other's first.
            for (name, state), n in sorted(by_outcome(WorkflowStep.objects.filter(pk__in=ids)).items()):
                tally, _ = StepTally.objects.get_or_create(name=name, state=state)
                StepTally.objects.filter(pk=tally.pk).update(settled=F("settled") + n)
            WorkflowStep.objects.filter(pk__in=ids).update(tallied=True)
        folded += len(ids)
        batches += 1
    return folded


def counts(settle_first: int | None = 10) -> dict[Outcome, int]:
    """Every settlement by step and outcome: the tally plus the steps not folded into it yet,
    read from one snapshot (a concurrent settle() moves steps from one to the other). First
    folds up to `settle_first` batches, so that a scrape keeps the unfolded part small; a
    failure to fold is logged and the figures are still whole."""

    def read() -> dict[Outcome, int]:
        totals = {(row.name, row.state): row.settled for row in StepTally.objects.all()}
        for outcome, n in by_outcome(untallied()).items():
            totals[outcome] = totals.get(outcome, 0) + n
        return totals

    return read_tally((lambda: settle(max_batches=settle_first)) if settle_first else None, read, "settled steps")
