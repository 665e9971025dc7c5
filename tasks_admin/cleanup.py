"""Deleting old task history in batches.

Celery's own `celery.backend_cleanup` is off (CELERY_RESULT_EXPIRES = None): it deletes
every expired result in one statement and one transaction, which on a large table
holds locks and bloats the log for as long as it runs. Here each batch of ids is
its own short transaction, and a run cut short (soft time limit) has kept what it did.
"""

import logging
from datetime import timedelta

from celery import states
from django.conf import settings
from django.db import models, transaction
from django.utils import timezone
from django_celery_results.models import ChordCounter, GroupResult, TaskResult

from . import tally
from .models import PLANNED, ChordPart, TaskRecord

logger = logging.getLogger(__name__)

BATCH_SIZE = 5000
# A chord header task in one of these states may still finish and count the chord down (a
# planned one waits for the steps before it: its chord's counter is written with its canvas).
LIVE_STATES = (PLANNED, states.PENDING, states.STARTED, states.RETRY)
# ...and so may one sent this recently, whatever its state says.
CHORD_GRACE = timedelta(hours=1)


def cleanup_task_history(days: int | None = None, batch_size: int = BATCH_SIZE) -> dict[str, int]:
    """Delete results and task records finished more than TASK_HISTORY_DAYS ago, and orphaned
    chord counters; return how many rows of each were deleted.

    Unresolved dead letters are kept, with their result (the traceback): staff still
    have to deal with them. Finished runs are folded into /metrics' tally first (tally.py).
    """
    days = settings.TASK_HISTORY_DAYS if days is None else days
    tally.settle()  # counted before deleted: /metrics' counters keep them
    cutoff = timezone.now() - timedelta(days=days)
    dead_letters = TaskRecord.objects.dead_letters()
    deleted = {
        "task_results": delete_in_batches(
            TaskResult.objects.filter(date_done__lt=cutoff).exclude(task_id__in=dead_letters.values("task_id")),
            batch_size,
        ),
        "group_results": delete_in_batches(GroupResult.objects.filter(date_done__lt=cutoff), batch_size),
        "task_records": delete_in_batches(
            TaskRecord.objects.filter(finished_at__lt=cutoff).exclude(pk__in=dead_letters.values("pk")), batch_size
        ),
        "chord_counters": delete_orphaned_chord_counters(batch_size),
    }
    logger.info("Task history older than %s days deleted: %s", days, deleted)
    return deleted


def delete_in_batches(queryset: models.QuerySet, batch_size: int = BATCH_SIZE) -> int:
    """Delete the rows of `queryset`, at most `batch_size` per transaction; return how many."""
    model, total = queryset.model, 0
    while True:
        with transaction.atomic():
            ids = list(queryset.order_by().values_list("pk", flat=True)[:batch_size])
            if not ids:
                return total
            _, by_model = model._default_manager.filter(pk__in=ids).delete()
        total += by_model.get(model._meta.label, 0)


def delete_orphaned_chord_counters(batch_size: int = BATCH_SIZE) -> int:
    """Delete the counters of chords whose callback can no longer be reached; return how many.

    django-celery-results deletes a chord's counter when its last header task finishes.
    One is left behind when a header task never finishes (its message lost, the header
    never sent): none of its header tasks is still queued, running or retrying, and none
    was sent in the last hour — or none of them was ever recorded. (A chord writes its
    counter just before it sends its header, so a counter read in that instant looks
    orphaned too; should it be deleted, its callback never runs, and the order workflow
    is sent again by recover_stuck_workflows, a report by running it again.)
    """
    recent = timezone.now() - CHORD_GRACE
    orphans = []
    for counter in ChordCounter.objects.order_by("pk").iterator():
        header = TaskRecord.objects.filter(task_id__in=header_task_ids(counter))
        if not header.filter(models.Q(state__in=LIVE_STATES) | models.Q(sent_at__gte=recent)).exists():
            orphans.append(counter.group_id)
    deleted = 0
    for i in range(0, len(orphans), batch_size):
        groups = orphans[i : i + batch_size]
        # The reports its header tasks made (tasks_admin/backend.py) go with the counter.
        delete_in_batches(ChordPart.objects.filter(group_id__in=groups), batch_size)
        deleted += delete_in_batches(ChordCounter.objects.filter(group_id__in=groups), batch_size)
    return deleted


def header_task_ids(counter: ChordCounter) -> list[str]:
    """The task ids of a chord's header, from the counter's `sub_tasks` (result tuples as JSON)."""
    try:
        return [result.id for result in counter.group_result().results]
    except (ValueError, TypeError):
        logger.warning("Chord counter %s has unreadable sub_tasks: %.200r", counter.group_id, counter.sub_tasks)
        return []
