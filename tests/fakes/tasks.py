"""Tasks that exist only for tests; workers load them with CELERY_EXTRA_IMPORTS=tests.fakes.tasks.

They write what they received to FAKE_TASKS_DIR, so a test can compare it with what it sent.
"""

import gc
import os
import time
from pathlib import Path

from celery import shared_task
from kombu.utils.json import dumps


def _dir() -> Path:
    return Path(os.environ["FAKE_TASKS_DIR"])


def fail_next_run(tag: str) -> None:
    """The next run of record_arguments with this tag fails (once)."""
    (_dir() / f"fail-{tag}").touch()


def received(tag: str) -> str | None:
    path = _dir() / f"received-{tag}.json"
    return path.read_text() if path.exists() else None


@shared_task
def record_arguments(tag: str, *args, **kwargs) -> str:
    """Fails once if asked to; otherwise writes its arguments, serialized with their types."""
    flag = _dir() / f"fail-{tag}"
    if flag.exists():
        flag.unlink()
        raise RuntimeError(f"failing {tag} once, as the test asked")
    (_dir() / f"received-{tag}.json").write_text(dumps({"args": args, "kwargs": kwargs}))
    return tag


@shared_task
def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@shared_task
def sleep_marked(tag: str, seconds: float) -> float:
    """Writes when it began (wall-clock, to FAKE_TASKS_DIR/began-<tag>), then sleeps."""
    (_dir() / f"began-{tag}").write_text(str(time.time()))
    time.sleep(seconds)
    return seconds


@shared_task(bind=True)
def hold_until_released(self, tag: str) -> int:
    """Records each run (read them with `runs`), then returns only once FAKE_TASKS_DIR/release-<tag> exists."""
    with (_dir() / f"runs-{tag}").open("a") as log:
        log.write(f"{self.request.retries} {time.time()}\n")
    while not (_dir() / f"release-{tag}").exists():
        time.sleep(0.05)
    return self.request.retries


def runs(tag: str, directory: Path | None = None) -> list[tuple[int, float]]:
    """(retries, wall-clock time) of each run of retry_with_countdown (or hold_until_released) with this tag, in order,
    from FAKE_TASKS_DIR or the `directory` the worker was given as its FAKE_TASKS_DIR."""
    path = (directory or _dir()) / f"runs-{tag}"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(int(retries), float(at)) for retries, at in (line.split() for line in lines)]


@shared_task(bind=True, max_retries=None)
def retry_with_countdown(self, tag: str, countdown: float, retries: int) -> int:
    """Records each run, then retries itself after `countdown` seconds until it has retried `retries` times."""
    with (_dir() / f"runs-{tag}").open("a") as log:
        log.write(f"{self.request.retries} {time.time()}\n")
    if self.request.retries < retries:
        raise self.retry(countdown=countdown)
    return self.request.retries


@shared_task
def count_frozen_objects(tag: str) -> int:
    """Writes how many objects its process has frozen out of the garbage collector (tasks_admin/gcfreeze.py)."""
    count = gc.get_freeze_count()
    (_dir() / f"frozen-{tag}").write_text(str(count))
    return count
