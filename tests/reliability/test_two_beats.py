"""9. Two beat processes started by mistake: each periodic job runs once per period."""

import time

from django.db import close_old_connections
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from tasks_admin.models import SchedulerLock, TaskRecord
from tests.support import wait_for

JOBS = {"every-1s": 1, "every-2s": 2, "every-3s": 3}
LEASE = 3  # BEAT_LOCK_SECONDS for these beats
PHASE_RUNS = 2  # runs of every job watched with both beats up, then again after the takeover


def sent_at(name: str, since: float = 0.0) -> list[float]:
    """When each run of the job was sent (recorded by the beat that sent it), in order."""
    close_old_connections()
    times = TaskRecord.objects.filter(periodic_task_name=name).values_list("sent_at", flat=True)
    return sorted(t.timestamp() for t in times if t.timestamp() >= since)


def watch(since: float, what: str) -> float:
    """Until every job has run PHASE_RUNS times since `since`; returns the time that was seen."""
    wait_for(lambda: all(len(sent_at(name, since)) >= PHASE_RUNS for name in JOBS), timeout=60, message=what)
    return time.time()


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
    beats = [stack.start_beat(BEAT_LOCK_SECONDS=str(LEASE)) for _ in range(2)]
    holder = wait_for(lambda: SchedulerLock.objects.values_list("owner", flat=True).first(), timeout=60)
    [leader] = [beat for beat in beats if f":{beat.process.pid}:" in holder]
    [standby] = [beat for beat in beats if beat is not leader]
    wait_for(lambda: sent_at("every-1s"), timeout=30, message="the first run")

    start = time.time()
    both_up = watch(start, "runs with both beats up")
    standby_log = standby.log()
    leader.signal(9)  # the lease holder dies; the other beat must take over, not double up
    leader.process.wait()
    killed = time.time()
    lease = SchedulerLock.objects.filter(owner=holder).values_list("expires_at", flat=True).first()
    assert lease, "the other beat took over before the dead beat's lease could be read"
    wait_for(
        lambda: "holding the scheduler lease" in standby.log()[len(standby_log) :],
        timeout=LEASE + 30,
        message="the other beat taking over",
    )
    end = watch(killed, "runs sent by the surviving beat")

    phases = {"both up": (start, both_up), "after the kill": (killed, end)}
    counts = {
        (phase, name): len([t for t in sent_at(name, since) if t <= until])
        for phase, (since, until) in phases.items()
        for name in JOBS
    }
    runs = {name: sent_at(name, start) for name in JOBS}
    gaps = {name: min(b - a for a, b in zip(times, times[1:], strict=False)) for name, times in runs.items()}
    after_kill = sent_at("every-1s", killed)[0]
    record(
        "9. two beats",
        {"orders placed": "—", "confirmed": "—", "lost": 0},
        faults=f"2 beat processes (lease {LEASE} s); the lease holder SIGKILLed once every job had run "
        f"{PHASE_RUNS} times",
        notes="runs per job, both up / after the kill: "
        + ", ".join(
            f"{name} {counts['both up', name]} in {both_up - start:.0f} s / "
            f"{counts['after the kill', name]} in {end - killed:.0f} s"
            for name in JOBS
        )
        + f"; shortest gap between runs of a job ≥ {min(gaps[n] / JOBS[n] for n in JOBS):.0%} of its period;"
        f" the survivor's first run came {after_kill - lease.timestamp():.1f} s after the dead beat's lease lapsed",
    )
    # Only the lease holder sent while both were up.
    assert "Sending due task" not in standby_log, standby_log[-3000:]
    for (phase, name), count in counts.items():
        since, until = phases[phase]
        # Two sending beats would double every count (the window's edges may add a run).
        assert count <= (until - since) / JOBS[name] + 1, (phase, name, count, until - since)
    for name, seconds in JOBS.items():
        assert gaps[name] >= seconds * 0.5, (name, gaps[name])
    # The survivor took over only once the dead beat's lease had lapsed.
    assert after_kill >= lease.timestamp(), (after_kill, lease)
