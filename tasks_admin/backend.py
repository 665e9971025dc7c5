"""The result backend: django-celery-results' database backend (results in TaskResult,
chords through ChordCounter), with two changes the failure-injection suite forced.

1. Chords that tolerate duplicate deliveries. The stock backend counts a chord's header
   down under SELECT ... FOR UPDATE, once per report: a header task delivered twice
   counts twice, and the callback fires before its siblings have finished. Here each
   header task is recorded once (a row unique on group and task id, inserted with
   ON CONFLICT DO NOTHING), and only a new row decrements the counter, by a single
   UPDATE ... RETURNING; the report that reaches zero fires the callback, so it fires
   exactly once. An immutable callback (`.si()`, as in the order workflow) is sent
   without first reading back every header result.
2. Database outages: storing a result is retried (result_backend_always_retry) on
   OperationalError too — connection refused, server gone — not only on InterfaceError.
"""

import logging

from celery import states
from celery.canvas import maybe_signature
from celery.exceptions import ChordError
from django.db import DatabaseError, OperationalError, connection, router, transaction
from django_celery_results.backends.database import DatabaseBackend, trigger_callback
from django_celery_results.models import ChordCounter

from .models import ChordPart

logger = logging.getLogger(__name__)

_INSERT_PART = (
    f"INSERT INTO {ChordPart._meta.db_table} (group_id, task_id, state, created_at) "
    "VALUES (%s, %s, %s, CURRENT_TIMESTAMP) ON CONFLICT (group_id, task_id) DO NOTHING RETURNING id"
)
_COUNT_DOWN = f"UPDATE {ChordCounter._meta.db_table} SET count = count - 1 WHERE group_id = %s RETURNING count"


class ShopDatabaseBackend(DatabaseBackend):
    def exception_safe_to_retry(self, exc: Exception) -> bool:
        if isinstance(exc, OperationalError) or type(exc).__name__ == "OperationalError":
            connection.close()  # reconnect on the next attempt
            return True
        return super().exception_safe_to_retry(exc)

    def on_chord_part_return(self, request, state: str, result, **kwargs) -> None:
        group_id, task_id = request.group, request.id
        if not group_id or not task_id:
            return
        db = router.db_for_write(ChordCounter)
        with transaction.atomic(using=db), connection.cursor() as cursor:
            cursor.execute(_INSERT_PART, [group_id, task_id, state])
            if cursor.fetchone() is None:
                logger.warning("Chord %s: %s reported twice; counted once", group_id, task_id)
                return
            cursor.execute(_COUNT_DOWN, [group_id])
            row = cursor.fetchone()
        if row is None:
            logger.warning("Chord %s: no counter (already fired or cleaned up)", group_id)
            return
        if row[0] == 0:
            self._fire(request, group_id)

    def _fire(self, request, group_id: str) -> None:
        """The last header task reported: call the callback, or its error callbacks."""
        callback = maybe_signature(request.chord, app=self.app)
        failed = (
            ChordPart.objects.filter(group_id=group_id).exclude(state=states.SUCCESS).values_list("task_id", flat=True)
        )
        culprit = next(iter(failed), None)
        if culprit is not None:
            self.chord_error_from_stack(callback, ChordError(f"Dependency {culprit} failed"))
        elif callback.immutable:
            callback.delay()
        else:
            counter = ChordCounter.objects.get(group_id=group_id)
            trigger_callback(app=self.app, callback=callback, group_result=counter.group_result(app=self.app))
        try:
            ChordCounter.objects.filter(group_id=group_id).delete()
            ChordPart.objects.filter(group_id=group_id).delete()
        except DatabaseError:  # left for tasks_admin.cleanup to remove
            logger.warning("Chord %s fired; could not delete its counter", group_id, exc_info=True)
