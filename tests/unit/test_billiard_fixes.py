"""The guard of tasks_admin/billiard_fixes.py, as the pool process's signal handler sees it (the
real worker: tests/integration/test_billiard_fixes.py)."""

import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from billiard import pool as billiard_pool
from billiard.exceptions import SoftTimeLimitExceeded

from tasks_admin import billiard_fixes


def task(soft: float | None) -> SimpleNamespace:
    return SimpleNamespace(
        request=SimpleNamespace(timelimit=(None, soft)),
        soft_time_limit=None,
        app=SimpleNamespace(conf=SimpleNamespace(task_soft_time_limit=None)),
    )


@pytest.fixture(autouse=True)
def no_task() -> Iterator[None]:
    billiard_fixes.task_ended()
    yield
    billiard_fixes.task_ended()


def test_outside_a_task_the_signal_is_dropped() -> None:
    billiard_fixes.guarded_handler(10, None)


def test_a_task_past_its_soft_limit_gets_it(monkeypatch) -> None:
    billiard_fixes.task_started(task(soft=2.0))
    monkeypatch.setattr(time, "monotonic", lambda: billiard_fixes._running[0] + 2.0 - billiard_fixes.SLACK)
    with pytest.raises(SoftTimeLimitExceeded):
        billiard_fixes.guarded_handler(10, None)


def test_a_task_far_from_its_soft_limit_does_not_get_the_one_before_it() -> None:
    billiard_fixes.task_started(task(soft=30.0))
    billiard_fixes.guarded_handler(10, None)


def test_a_task_without_a_soft_limit_gets_a_deliberate_signal() -> None:
    """`revoke(…, terminate=True, signal="SIGUSR1")` still reaches a task that has no soft limit."""
    billiard_fixes.task_started(task(soft=None))
    with pytest.raises(SoftTimeLimitExceeded):
        billiard_fixes.guarded_handler(10, None)


def test_after_the_task_ended_the_signal_is_dropped() -> None:
    billiard_fixes.task_started(task(soft=0.5))
    billiard_fixes.task_ended()
    billiard_fixes.guarded_handler(10, None)


def test_apply_installs_the_guard_only_on_listed_versions() -> None:
    try:
        assert not billiard_fixes.apply(versions=frozenset())
        assert billiard_pool.soft_timeout_sighandler is not billiard_fixes.guarded_handler
        with pytest.raises(SoftTimeLimitExceeded):
            billiard_pool.soft_timeout_sighandler(10, None)
    finally:
        billiard_fixes.apply()
    assert billiard_pool.soft_timeout_sighandler is billiard_fixes.guarded_handler
