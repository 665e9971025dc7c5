"""tasks_admin/billiard_fixes.py with a real prefork worker whose main process is late on a task's
soft deadline: stopped across it, as a busy, CPU-starved or frozen host leaves it. The task has
ended by then, so the soft time limit signal reaches its pool process outside any task; without
the guard that process dies every time (and a task it had been handed with it), with the guard it
runs on."""

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import billiard
import pytest

from tasks_admin import billiard_fixes
from tests import processes
from tests.fakes.tasks import sleep_marked
from tests.processes import WorkerProcess

QUEUE = "late-soft-limit"
SOFT = 2.0
ROUNDS = 3


@pytest.fixture
def prefork_worker(transactional_db, broker_url, fake_tasks_dir, tmp_path: Path) -> Iterator[WorkerProcess]:
    env = {
        "DATABASE_URL": processes.test_database_url(),
        "CELERY_BROKER_URL": broker_url,
        "CELERY_EXTRA_IMPORTS": "tests.fakes.tasks",
        "FAKE_TASKS_DIR": str(fake_tasks_dir),
    }
    args = ("--pool", "prefork", "--concurrency", "1", "--queues", QUEUE, "--hostname", "late-soft-limit@%h")
    worker = WorkerProcess(env, tmp_path / "worker.log", args=args).start()
    yield worker
    worker.stop()


def began(path: Path, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"the task did not begin within {timeout} s"
        time.sleep(0.005)
    return float(path.read_text())


def test_a_soft_time_limit_signalled_late_leaves_the_pool_process_running(
    prefork_worker: WorkerProcess, fake_tasks_dir: Path
) -> None:
    assert billiard_fixes.apply(), f"billiard {billiard.__version__}: check whether it needs the guard, then list it"
    main = prefork_worker.process.pid
    results = []
    for n in range(ROUNDS):
        tag = f"late-{n}"
        # Ends 0.1 s before its soft deadline, while the main process is stopped: the deadline
        # passes before the main process has read the result, and it signals on waking.
        result = sleep_marked.apply_async((tag, SOFT - 0.1), queue=QUEUE, soft_time_limit=SOFT, time_limit=SOFT + 30)
        time.sleep(max(0.0, began(fake_tasks_dir / f"began-{tag}") + SOFT - 0.2 - time.time()))
        os.kill(main, signal.SIGSTOP)
        time.sleep(0.6)
        os.kill(main, signal.SIGCONT)
        results.append(result)
        time.sleep(1)  # the late signal, and a pool process dying of it, before the next round
    assert [result.get(timeout=30, interval=0.2) for result in results] == [SOFT - 0.1] * ROUNDS
    log = prefork_worker.log()
    assert log.count(f"Soft time limit ({SOFT}s) exceeded") >= 1, "the main process was never late: nothing was tested"
    assert "Pool process" not in log and "exited with" not in log, log[-4000:]
