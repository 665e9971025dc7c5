"""Two real `celery -A shop beat` processes: one sends, the other takes over when it is killed."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from celery import states
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from tasks_admin.models import SchedulerLock, TaskRecord
from tests import processes
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

LEASE = 3  # BEAT_LOCK_SECONDS for these beats: a takeover within seconds
PROBE = "beat-lock-probe"


class BeatProcess:
    """`celery -A shop beat`, as the README starts it, with its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [processes.CELERY, "-A", "shop", "beat", "--loglevel", "INFO"],
            cwd=processes.ROOT,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def sent(self) -> int:
        return self.log().count(f"Sending due task {PROBE} ")

    def kill(self) -> None:
        """Die at once, as a crashed host does: no chance to release the lease."""
        os.killpg(self.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def runs() -> int:
    """Runs of the probe sent so far (recorded by the beat that sent each)."""
    return TaskRecord.objects.filter(periodic_task_name=PROBE).count()


def lease_holder() -> str | None:
    return SchedulerLock.objects.values_list("owner", flat=True).first()


def test_one_beat_sends_the_other_takes_over_when_it_dies_and_a_clean_stop_releases_the_lease(
    worker, broker_url, tmp_path
):
    PeriodicTask.objects.create(
        name=PROBE,
        task="shop.tasks.send_low_stock_alert",  # no products: a cheap run
        interval=IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS),
    )
    env = {
        "DATABASE_URL": processes.test_database_url(),
        "CELERY_BROKER_URL": broker_url,
        "BEAT_LOCK_SECONDS": str(LEASE),
    }
    beats = [BeatProcess(env, tmp_path / f"beat-{n}.log") for n in (1, 2)]
    try:
        holder = wait_for(lease_holder, timeout=60, message="a beat holding the lease")
        [leader] = [beat for beat in beats if f":{beat.pid}:" in holder]
        [standby] = [beat for beat in beats if beat is not leader]
        wait_for(lambda: "standing by" in standby.log(), timeout=60, message="the second beat standing by")

        # Both running: one run a second, all sent by the lease holder.
        wait_for(lambda: runs() >= 1, message="the first run")
        started, before = time.monotonic(), runs()
        wait_for(lambda: runs() >= before + 5, message="5 more runs")
        sent, elapsed = runs() - before, time.monotonic() - started
        assert sent <= elapsed + 1.5, (sent, elapsed)  # two beats would send twice as many
        assert leader.sent() >= sent and standby.sent() == 0

        # The lease holder dies; the other beat takes over once its lease lapses, not before.
        leader.kill()
        killed, before = timezone.now(), runs()
        lease = SchedulerLock.objects.filter(owner=holder).values_list("expires_at", flat=True).first()
        assert lease, "the other beat took over before the dead beat's lease could be read"
        wait_for(lambda: runs() > before, timeout=LEASE + 10, message="a run sent by the other beat")
        first = TaskRecord.objects.filter(periodic_task_name=PROBE, sent_at__gte=killed).earliest("sent_at")
        assert first.sent_at >= lease, (first.sent_at, lease)
        assert f":{standby.pid}:" in lease_holder()
        assert standby.sent() >= 1

        # It carries on at the same pace: no burst of runs the first beat had already sent.
        started, before = time.monotonic(), runs()
        wait_for(lambda: runs() >= before + 3, message="3 more runs")
        assert runs() - before <= time.monotonic() - started + 1.5
        # The worker ran them.
        sent = runs()
        wait_for(
            lambda: TaskRecord.objects.filter(periodic_task_name=PROBE, state=states.SUCCESS).count() >= sent,
            message="the worker running the probe",
        )

        # A clean stop releases the lease at once.
        standby.stop()
        assert standby.process.returncode == 0
        assert "released the scheduler lease" in standby.log()
        assert lease_holder() is None
    finally:
        for beat in beats:
            beat.stop()
