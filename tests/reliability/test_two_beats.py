"""9. Two beat processes started by mistake: each periodic job runs once per period."""

import time

from django.db import close_old_connections
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from tasks_admin.models import SchedulerLock, TaskRecord
from tests.support import wait_for

JOBS = {"every-1s": 1, "every-2s": 2, "every-3s": 3}
RUN_FOR = 12.0


def sent_at(name: str) -> list[float]:
    close_old_connections()
    return [t.timestamp() for t in TaskRecord.objects.filter(periodic_task_name=name).values_list("sent_at", flat=True)]


def test_two_beats_send_each_job_once_per_period_and_the_survivor_takes_over(make_stack, record):
    for name, seconds in JOBS.items():
        PeriodicTask.objects.create(
            name=name,
            task="tests.fakes.tasks.sleep_for",
            args="[0]",
            interval=IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)[0],
        )
    stack = make_stack()
    stack.start(workers=1, web=False)
    beats = [stack.start_beat(BEAT_LOCK_SECONDS="3") for _ in range(2)]
    holder = wait_for(lambda: SchedulerLock.objects.values_list("owner", flat=True).first(), timeout=60)
    leader = next(beat for beat in beats if f":{beat.process.pid}:" in holder)
    wait_for(lambda: sent_at("every-1s"), timeout=30, message="the first run")

    start = time.time()
    time.sleep(RUN_FOR / 2)
    leader.signal(9)  # the lease holder dies; the other beat must take over, not double up
    time.sleep(RUN_FOR / 2)
    end = time.time()

    counts, gaps = {}, {}
    for name, seconds in JOBS.items():
        times = sorted(t for t in sent_at(name) if start <= t <= end)
        counts[name] = len(times)
        gaps[name] = min((b - a for a, b in zip(times, times[1:], strict=False)), default=seconds)
    takeover_gap = max(
        b - a for a, b in zip(sorted(sent_at("every-1s")), sorted(sent_at("every-1s"))[1:], strict=False)
    )
    record(
        "9. two beats",
        {"orders placed": "—", "confirmed": "—", "lost": 0},
        faults=f"2 beat processes for {RUN_FOR:.0f} s; the lease holder SIGKILLed halfway",
        notes=f"runs per job in {end - start:.0f} s: "
        + ", ".join(f"{name} {counts[name]}" for name in JOBS)
        + f"; shortest gap between runs of a job ≥ {min(gaps[n] / JOBS[n] for n in JOBS):.0%} of its period;"
        f" takeover left a {takeover_gap:.1f} s gap",
    )
    for name, seconds in JOBS.items():
        expected = (end - start) / seconds
        # Two sending beats would double every count; the takeover costs at most the lease (3 s)
        # plus a tick, and the window's edges a run each.
        assert (end - start - 5) / seconds - 1 <= counts[name] <= expected + 1, (name, counts[name], expected)
        assert gaps[name] >= seconds * 0.5, (name, gaps[name])
