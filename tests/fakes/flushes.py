"""Tells the reliability suite when a worker process has written its batched records; loaded by
workers with CELERY_EXTRA_IMPORTS=tests.fakes.flushes. Nothing here runs in the shop itself.

Each write of tasks_admin/writebehind.py's batches that leaves nothing pending stamps
FAULT_DIR/flushed-<pid> with the wall-clock time it began: once that is later than the moment a
test saw its orders final, every record the process held then is in the database, and the test
need not guess how long the batches take. A flush the database turned away (its rows put back
for the next) stamps nothing: scenario 7 read a confirmation's start as None in CI on 2026-12-07,
after a flush that PostgreSQL aborted as a deadlock had stamped it.

The marker exists from the process's first task on, when it starts batching, not from its first
write: a pool process whose first task was an order's last would otherwise go unwaited for until
its flusher first woke (test_chord_duplicates.py read a confirmation's start before it was
written, in CI on 2026-12-06).
"""

import os
import time
from functools import wraps
from pathlib import Path

from celery import signals

from tasks_admin import writebehind

_flush = writebehind.flush
_waited_for: set[int] = set()  # the pids whose marker exists (a forked pool process has its own)


def _marker() -> Path:
    return Path(os.environ["FAULT_DIR"]) / f"flushed-{os.getpid()}"


@signals.task_prerun.connect(weak=False)
def _batching_begins(**kwargs) -> None:
    """Connected after the shop's own receivers, so it runs once a first task has started the
    process's batching (writebehind.start_batching)."""
    if writebehind._batching():
        _wait_for_me()


@wraps(_flush)
def _flush_and_tell() -> None:
    _wait_for_me()  # before anything this process batched is written
    began = time.time()
    _flush()
    if not _left_pending():
        _tell(_marker(), began)


def _left_pending() -> bool:
    """Whether rows wait for a later flush: some the database did not take (put back), or some
    recorded meanwhile (the next flush, begun later, will tell)."""
    with writebehind._lock:
        return any(table._rows for table in writebehind._tables)


def _wait_for_me() -> None:
    """From now on, tests wait for this process's writes: its marker exists (0.0: nothing written yet)."""
    if os.getpid() not in _waited_for:
        if not _marker().exists():
            _tell(_marker(), 0.0)
        _waited_for.add(os.getpid())


def _tell(marker: Path, began: float) -> None:
    partial = marker.with_name(marker.name + ".partial")
    partial.write_text(repr(began))
    os.replace(partial, marker)  # a reader never sees half a number


writebehind.flush = _flush_and_tell
