"""Tasks that exist only for tests; workers load them with CELERY_EXTRA_IMPORTS=tests.fakes.tasks.

They write what they received to FAKE_TASKS_DIR, so a test can compare it with what it sent.
"""

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
