"""The beat lease: one scheduler sends, another stands by and takes over when the lease lapses.

Two real beat processes: tests/integration/test_beat_lock.py.
"""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat import schedulers as schedulers_module
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from shop.celery import app as celery_app
from tasks_admin import beat
from tasks_admin.beat import LOCK_NAME, SingletonDatabaseScheduler, acquire_lease, release_lease
from tasks_admin.models import SchedulerLock

pytestmark = pytest.mark.django_db


def lapse(owner: str) -> None:
    SchedulerLock.objects.filter(owner=owner).update(expires_at=timezone.now() - timedelta(seconds=1))


def test_one_owner_holds_the_lease_until_it_lapses_or_is_released():
    assert acquire_lease("a", 30)
    assert not acquire_lease("b", 30)
    assert acquire_lease("a", 30)  # renewed

    lapse("a")
    assert acquire_lease("b", 30)
    assert not acquire_lease("a", 30)

    release_lease("b")
    assert not SchedulerLock.objects.exists()
    assert acquire_lease("a", 30)
    assert SchedulerLock.objects.get().name == LOCK_NAME


def test_the_lease_is_set_on_the_database_clock_for_the_lease_length():
    before = timezone.now()
    acquire_lease("a", 30)

    expires_at = SchedulerLock.objects.get().expires_at
    assert before + timedelta(seconds=29) < expires_at < timezone.now() + timedelta(seconds=31)


class RecordingScheduler(SingletonDatabaseScheduler):
    """Records what it would send instead of publishing to a broker."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.producer = None
        self.sent: list[str] = []

    def apply_entry(self, entry, producer=None) -> None:
        self.sent.append(entry.name)


@pytest.fixture
def schedulers(settings, monkeypatch):
    settings.BEAT_LOCK_SECONDS = 3
    # Beat drops stale connections on each pass; here that would close the test's transaction.
    for module in (beat, schedulers_module):
        monkeypatch.setattr(module, "close_old_connections", lambda: None)
    made = []

    def make() -> RecordingScheduler:
        scheduler = RecordingScheduler(app=celery_app, lazy=True)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler._finalize.cancel()


@pytest.fixture
def hourly_task_due() -> PeriodicTask:
    return PeriodicTask.objects.create(
        name="hourly",
        task="shop.tasks.send_low_stock_alert",
        interval=IntervalSchedule.objects.create(every=1, period=IntervalSchedule.HOURS),
        last_run_at=timezone.now() - timedelta(hours=2),
    )


def test_only_the_lease_holder_sends_and_a_successor_does_not_send_it_again(schedulers, hourly_task_due):
    first, second = schedulers(), schedulers()
    assert second.schedule["hourly"].last_run_at < timezone.now() - timedelta(hours=1)  # read before the send

    first.tick()
    first.sync()  # as after each send (CELERY_BEAT_SYNC_EVERY = 1)
    assert first.sent == ["hourly"]

    assert second.tick() == 1.0  # a third of the lease: standing by
    assert second.sent == []

    lapse(first.owner)  # the first beat died
    second.tick()
    assert SchedulerLock.objects.get().owner == second.owner
    assert second.sent == []  # it read the schedule again: the task ran an instant ago
    assert second.schedule["hourly"].last_run_at > timezone.now() - timedelta(minutes=1)
    assert first.tick() == 1.0 and first.sent == ["hourly"]


def test_a_clean_shutdown_releases_the_lease_at_once(schedulers, hourly_task_due):
    first, second = schedulers(), schedulers()
    first.tick()

    first.close()

    assert not SchedulerLock.objects.exists()
    second.tick()
    assert SchedulerLock.objects.get().owner == second.owner


def test_a_closed_scheduler_exits_instead_of_taking_the_lease_again(schedulers, hourly_task_due):
    # SIGTERM mid-publish: Celery's handler closes the scheduler, but its SystemExit is lost.
    scheduler = schedulers()
    scheduler.tick()
    scheduler.close()

    with pytest.raises(SystemExit):
        scheduler.tick()
    assert not SchedulerLock.objects.exists()
    assert scheduler.sent == ["hourly"]


def test_a_beat_waits_at_most_a_third_of_the_lease_between_ticks(schedulers):
    scheduler = schedulers()

    assert scheduler.tick() == 1.0  # leader, nothing scheduled: renews before a third of the lease passes
    assert SchedulerLock.objects.get().owner == scheduler.owner
