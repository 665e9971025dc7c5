"""Two pool processes' write-behind flushes that update the same task records in opposite orders
both write their batches in that flush (tasks_admin/writebehind.py): PostgreSQL aborts one of
them as a deadlock, and that one runs its transaction again once the other has committed.

The crossing is the normal case, not a contrived one: a process records the run of a task the
other sent (its history batch) while the other records having sent it (its sent-task batch).
Before the retry, the aborted batch waited for the next flush, and the failure-injection suite's
wait for the workers' records could return before it (scenario 7 read a confirmation's start as
None in CI, 2026-12-06 and 12-07). PostgreSQL only: .ci/run runs it there."""

import itertools
import multiprocessing
import os
from threading import BrokenBarrierError

import pytest
from celery import states
from django.db import connection
from django.utils import timezone

from tasks_admin import writebehind
from tasks_admin.models import TaskRecord
from tests.support import require

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_processes_flushing_the_same_rows_in_opposite_orders_both_write_their_batches() -> None:
    require(
        connection.vendor == "postgresql", "the deadlock is between PostgreSQL sessions (DATABASE_URL=postgres://…)"
    )
    for task_id in ("x", "y"):
        TaskRecord.objects.create(task_id=task_id, task_name="t", sent_at=timezone.now())
    fork = multiprocessing.get_context("fork")
    both_hold_their_first_row = fork.Barrier(2, timeout=10)
    attempts = itertools.count()

    def write_runs(rows: writebehind.Rows) -> None:
        writebehind.update_rows(TaskRecord, ("task_id",), rows, additive=("attempts",))
        if next(attempts) == 0:  # hold the row until the other process holds its own
            try:
                both_hold_their_first_row.wait()
            except BrokenBarrierError:
                pass

    runs = writebehind.Table("test runs", write_runs, additive=("attempts",))
    sent = writebehind.Table("test sent", lambda rows: writebehind.update_rows(TaskRecord, ("task_id",), rows))

    def pool_process(ran: str, sent_on: str) -> None:
        writebehind._enabled_pid = os.getpid()
        runs.put(ran, state=states.SUCCESS, worker=f"ran {ran}", attempts=1)
        sent.put(sent_on, queue=f"sent {sent_on}")
        writebehind.flush()
        pending = [table.name for table in writebehind._tables if table._rows]
        connection.close()
        os._exit(1 if pending else 0)

    connection.close()  # each forked process opens its own session
    try:
        processes = [fork.Process(target=pool_process, args=crossing) for crossing in (("x", "y"), ("y", "x"))]
        for process in processes:
            process.start()
        for process in processes:
            process.join(30)
    finally:
        writebehind._tables.remove(runs)
        writebehind._tables.remove(sent)

    assert [process.exitcode for process in processes] == [0, 0]  # nothing left for a later flush
    stored = {r.task_id: (r.state, r.worker, r.attempts, r.queue) for r in TaskRecord.objects.all()}
    assert stored == {"x": (states.SUCCESS, "ran x", 1, "sent x"), "y": (states.SUCCESS, "ran y", 1, "sent y")}
