"""tasks_admin/gcfreeze.py in real workers: the process that runs a task, a prefork pool process
or a threads worker's own, has its start-up objects frozen out of the garbage collector, so a full
collection no longer walks them in the middle of a task; and in the web process, which gunicorn
starts by importing shop.wsgi, so that none walks them in the middle of a request."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import processes
from tests.fakes.tasks import count_frozen_objects
from tests.processes import WorkerProcess
from tests.support import wait_for

# A worker process starts with over 120,000 objects (Django, Celery, kombu, the apps), a web
# process with about 113,000; a process that froze nothing reports 0.
AT_LEAST = 50_000


@pytest.fixture(params=["prefork", "threads"])
def pool_worker(
    request, transactional_db, broker_url, fake_tasks_dir, tmp_path: Path
) -> Iterator[tuple[str, WorkerProcess]]:
    queue = f"gc-freeze-{request.param}"
    env = {
        "DATABASE_URL": processes.test_database_url(),
        "CELERY_BROKER_URL": broker_url,
        "CELERY_EXTRA_IMPORTS": "tests.fakes.tasks",
        "FAKE_TASKS_DIR": str(fake_tasks_dir),
    }
    args = ("--pool", request.param, "--concurrency", "1", "--queues", queue, "--hostname", f"{queue}@%h")
    worker = WorkerProcess(env, tmp_path / "worker.log", args=args).start()
    yield queue, worker
    worker.stop()


def test_a_task_runs_with_its_process_start_up_objects_frozen(pool_worker, fake_tasks_dir: Path) -> None:
    queue, _ = pool_worker
    count_frozen_objects.apply_async((queue,), queue=queue)
    path = fake_tasks_dir / f"frozen-{queue}"
    frozen = wait_for(lambda: path.exists() and path.read_text(), message=f"the task on the {queue} worker")
    assert int(frozen) >= AT_LEAST


def test_the_web_process_serves_with_its_start_up_objects_frozen() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import gc, shop.wsgi; print(gc.get_freeze_count())"],
        cwd=processes.ROOT,
        env={**os.environ, "DATABASE_URL": processes.test_database_url()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= AT_LEAST
