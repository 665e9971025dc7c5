"""A guard on the prefork pool's soft time limit, applied only to the billiard versions checked to
need it (`apply()`, called by the Celery app in shop/celery.py; the receivers are connected in
tasks_admin/signals.py).

The pool's main process times each task's soft limit from the moment its pool process took the
task, and when it is up, and the task's result has not reached the main process yet, signals that
process (SIGUSR1). billiard's handler there raises SoftTimeLimitExceeded wherever the process is
(billiard/pool.py, `soft_timeout_sighandler`). A main process that is late — busy, starved of CPU,
stopped — reads a result that was already written after the deadline has passed, and the signal
then lands in the pool process's own code, not in the task:
- waiting for its next task: the process dies ("Pool process … error: SoftTimeLimitExceeded",
  then "exited with 'exitcode 1'"), and a task it had already been handed is lost with it;
- writing a result longer than 16 KiB to the pipe, between the length and the bytes (billiard's
  `Connection._send_bytes`): billiard then writes a second message after the half-written one, the
  main process reads the second's length as the first's data ("Unrecoverable error:
  UnpicklingError: invalid load key, '\\x00'") and stops consuming for good — what the host-cut
  failure-injection scenario hit once (docs/reliability.md, scenario 19);
- inside the next task, which then fails for the limit of the one before.
No upstream report of it was found (celery/celery and celery/billiard issues, searched 2026-12-06);
the nearest is celery/celery#2294, the main process dying on a result it cannot unpickle.

The guard: each pool process knows whether a task body runs in it and since when (task_prerun to
task_postrun), and the handler raises only while one runs and has run at least its soft limit less
SLACK seconds (the timer starts when the process takes the task, a moment before task_prerun). Any
other SIGUSR1 is dropped; the hard time limit still ends a pool process that does not finish.
Proven by tests/integration/test_billiard_fixes.py: a worker's main process stopped across a task's
soft deadline loses its pool process every time without the guard, never with it.
"""

import time

import billiard
from billiard import pool as billiard_pool
from billiard.exceptions import SoftTimeLimitExceeded

from .timelimits import soft_time_limit

# Versions checked to raise the soft time limit wherever the pool process is (billiard/pool.py).
UNGUARDED = frozenset({"4.3.2"})

# How much sooner than its soft limit a task may see the signal that is its own.
SLACK = 1.0

_original_handler = billiard_pool.soft_timeout_sighandler

# The task body running in this pool process: (time.monotonic() when it began, its soft limit).
_running: tuple[float, float | None] | None = None


def task_started(task=None, **kwargs) -> None:
    """task_prerun."""
    global _running
    _running = (time.monotonic(), soft_time_limit(task) if task is not None else None)


def task_ended(**kwargs) -> None:
    """task_postrun."""
    global _running
    _running = None


def guarded_handler(signum, frame) -> None:
    """billiard's soft time limit handler, raising only in a task body whose limit can be up."""
    running = _running
    if running is None:
        return
    began, soft = running
    if soft and time.monotonic() - began < soft - SLACK:
        return  # the signal of a task that ended before this one began
    raise SoftTimeLimitExceeded()


def apply(versions: frozenset[str] = UNGUARDED) -> bool:
    """Install the guard in the pool processes forked from now on (billiard looks its handler up
    when a process starts) if this billiard is listed; whether it did."""
    guard = billiard.__version__ in versions
    billiard_pool.soft_timeout_sighandler = guarded_handler if guard else _original_handler
    return guard
