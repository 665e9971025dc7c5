"""Tells the reliability suite when a worker process has written its batched records; loaded by
workers with CELERY_EXTRA_IMPORTS=tests.fakes.flushes. Nothing here runs in the shop itself.

Each write of tasks_admin/writebehind.py's batches leaves FAULT_DIR/flushed-<pid> holding the
wall-clock time it began: once that is later than the moment a test saw its orders final,
every record the process held then is in the database, and the test need not guess how long
the batches take.
"""

import os
import time
from functools import wraps
from pathlib import Path

from tasks_admin import writebehind

_flush = writebehind.flush


@wraps(_flush)
def _flush_and_tell() -> None:
    marker = Path(os.environ["FAULT_DIR"]) / f"flushed-{os.getpid()}"
    if not marker.exists():  # before anything this process batched is written: wait for it from now on
        _tell(marker, 0.0)
    began = time.time()
    _flush()
    _tell(marker, began)


def _tell(marker: Path, began: float) -> None:
    partial = marker.with_name(marker.name + ".partial")
    partial.write_text(repr(began))
    os.replace(partial, marker)  # a reader never sees half a number


writebehind.flush = _flush_and_tell
