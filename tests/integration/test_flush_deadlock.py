"""Two pool processes' write-behind flushes that write the same task records, each process's
batches in the opposite order to the other's, both write their batches once, without a deadlock
(tasks_admin/writebehind.py, _lock_in_order): the second waits for the first.

The crossing is the normal case, not a contrived one: a process records the run of a task the
other sent (its history batch) while the other records having sent it (its sent-task batch).
Without the lock, PostgreSQL aborted one of them after a second as a deadlock: first it waited
for the next flush (scenario 7 read a confirmation's start as None in CI, 2026-12-06 and 12-07),
then it ran its transaction again; at a worker's shutdown, when all its pool processes flush at
once, stopping took up to 14 s instead of 1.6. PostgreSQL only: .ci/run runs it there."""

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


def test_two_processes_flushing_the_same_rows_in_opposite_orders_write_their_batches_once() -> None:
    require(
        connection.vendor == "postgresql", "the deadlock is between PostgreSQL sessions (DATABASE_URL=postgres://…)"
    )
    for task_id in ("x", "y"):
        TaskRecord.objects.create(task_id=task_id, task_name="t", sent_at=timezone.now())
    fork = multiprocessing.get_context("fork")
    # Each process holds the row of its first write until the other holds its own: they cross.
    # Locked in order, the second cannot write before the first commits: the wait times out.
    both_hold_their_first_row = fork.Barrier(2, timeout=3)
    writes = itertools.count(1)  # each process's own count, from the fork on

    def write_runs(rows: writebehind.Rows) -> None:
        writebehind.update_rows(TaskRecord, ("task_id",), rows, additive=("attempts",))
        if next(writes) == 1:
            try:
                both_hold_their_first_row.wait()
            except BrokenBarrierError:
                pass

    records = (TaskRecord, "task_id")
    runs = writebehind.Table("test runs", write_runs, additive=("attempts",), rows_of=records)
    sent = writebehind.Table(
        "test sent", lambda rows: writebehind.update_rows(TaskRecord, ("task_id",), rows), rows_of=records
    )

    def pool_process(ran: str, sent_on: str) -> None:
        writebehind._enabled_pid = os.getpid()
        runs.put(ran, state=states.SUCCESS, worker=f"ran {ran}", attempts=1)
        sent.put(sent_on, queue=f"sent {sent_on}")
        writebehind.flush()
        pending = [table.name for table in writebehind._tables if table._rows]
        ran_again = next(writes) > 2  # its history batch written more than once: aborted, run again
        connection.close()
        os._exit(1 if pending else 2 if ran_again else 0)

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

    # 1: a batch left for a later flush; 2: a flush aborted as a deadlock and run again.
    assert [process.exitcode for process in processes] == [0, 0]
    stored = {r.task_id: (r.state, r.worker, r.attempts, r.queue) for r in TaskRecord.objects.all()}
    assert stored == {"x": (states.SUCCESS, "ran x", 1, "sent x"), "y": (states.SUCCESS, "ran y", 1, "sent y")}
