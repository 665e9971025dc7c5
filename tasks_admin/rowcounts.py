"""A table's rows counted by status, kept as a tally: the gauges /metrics reads (orders by status,
messages by channel and status) without counting tables that are kept for good.

Counting 1,000,000 orders and their 1,940,000 messages at each scrape took 482.8 ms, 7.3 ms
from the tally (`python -m benchmarks admin`, docs/benchmarks.md). The model carries
`counted_as`, the status the tally counts the row under ('' until it is first counted), written
here only, and `counted`, a stored generated column (counted_as is the status): a row not
counted has moved since, and a partial index finds those few. `fold()` moves them in the tally
(one less under the old status, one more under the new) and sets `counted_as` in the same
transaction; `counts()` reads the tally plus the moves not folded yet. Whoever writes a
status (the order's state machine, a message's delivery) needs to know nothing of this, as long
as it writes its own fields only, never the whole row as loaded (orders/admin.py). Rows are
never deleted (their admins refuse it): a deleted row would stay counted. An upgraded shop's
existing rows are folded 50,000 a scrape, and counted from the table meanwhile.
Proven by tests/functional/test_row_counts.py.
"""

import json
from collections import Counter

from django.db import models, transaction
from django.db.models import Count, F, QuerySet

from .models import RowCount
from .sql import read_tally

BATCH_SIZE = 5000
COUNTED_AS = "counted_as"

Labels = tuple[str, ...]  # the `group` fields' values, then the status


def counted_field(field: str = "status") -> models.GeneratedField:
    """Whether the row's status is the one the tally counts it under: a stored column, so that
    the planner has statistics of it. On `counted_as <> status` PostgreSQL guesses that nearly
    every row matches, and read 1,000,000 orders rather than the partial index of the few."""
    return models.GeneratedField(
        expression=models.Q(**{COUNTED_AS: F(field)}), output_field=models.BooleanField(), db_persist=True
    )


def uncounted_index(name: str) -> models.Index:
    """The partial index of a model's rows whose status moved since the tally counted them."""
    return models.Index(fields=["id"], condition=models.Q(counted=False), name=name)


class RowCounts:
    """`model`'s rows by `group` (fields that never change, a message's channel, say) and `field`."""

    def __init__(self, model: type[models.Model], field: str = "status", group: tuple[str, ...] = ()) -> None:
        self.model, self.field, self.group = model, field, group
        self.series = model._meta.label

    def moved(self) -> QuerySet:
        return self.model._default_manager.filter(counted=False)

    def _moves(self, rows: QuerySet) -> Counter[Labels]:
        fields = (*self.group, COUNTED_AS, self.field)
        moves: Counter[Labels] = Counter()
        for *group, was, now, n in rows.order_by().values_list(*fields).annotate(n=Count("pk")):
            if was:
                moves[(*group, was)] -= n
            moves[(*group, now)] += n
        return moves

    def fold(self, batch_size: int = BATCH_SIZE, max_batches: int | None = None) -> int:
        """Move the rows that moved into the tally, a batch per transaction (several web processes
        may scrape at once: each takes rows the others have not locked, and a row being written
        by its owner is left for the next fold); return how many were folded."""
        folded = batches = 0
        while max_batches is None or batches < max_batches:
            with transaction.atomic():
                moved = self.moved().order_by().select_for_update(skip_locked=True)
                ids = list(moved.values_list("pk", flat=True)[:batch_size])
                if not ids:
                    break
                rows = self.model._default_manager.filter(pk__in=ids)
                # In one order: two folds at once lock the tally's rows alike, never each other's first.
                for labels, n in sorted(self._moves(rows).items()):
                    if n:
                        count, _ = RowCount.objects.get_or_create(series=self.series, labels=json.dumps(labels))
                        RowCount.objects.filter(pk=count.pk).update(rows=F("rows") + n)
                rows.update(**{COUNTED_AS: F(self.field)})  # update(): no auto_now field moves
            folded += len(ids)
            batches += 1
        return folded

    def counts(self, fold_first: int | None = 10) -> Counter[Labels]:
        """The rows by labels: the tally plus the moves not folded into it yet, read from one
        snapshot. First folds up to `fold_first` batches, so that a scrape keeps the unfolded
        part small; a failure to fold is logged and the figures are still whole."""

        def read() -> Counter[Labels]:
            tally = RowCount.objects.filter(series=self.series).values_list("labels", "rows")
            totals: Counter[Labels] = Counter({tuple(json.loads(labels)): rows for labels, rows in tally})
            totals.update(self._moves(self.moved()))
            return totals

        fold = (lambda: self.fold(max_batches=fold_first)) if fold_first else None
        return read_tally(fold, read, f"{self.series} rows")
