"""3. Redis restarted (no persistence) while workflows are queued and running."""

import time
import uuid
from collections import Counter
from collections.abc import Callable

import redis
from django.db import close_old_connections

from orders.models import Order
from shop.celery import app
from tests.fakes.tasks import runs
from tests.support import wait_for

from .harness import FINAL_STATUSES, Stack
from .scenarios import payloads, recovered_orders, schedule_recovery, stock_up

ORDERS = 50
OUTAGE_SECONDS = 2
CHARGE = "orders.payments:DemoGateway.charge"


def statuses(order_ids: list[str]) -> Counter:
    close_old_connections()
    return Counter(Order.objects.filter(pk__in=order_ids).values_list("status", flat=True))


def test_every_order_confirms_once_after_redis_restarts_mid_workflow(
    make_stack: Callable[..., Stack], record: Callable[..., None]
) -> None:
    """A broker restart loses every queued message: workers must reconnect on their own and the
    recovery job must finish what was lost, without charging or messaging anyone twice."""
    # One task at a time, and the first charge paused just after charging until the worker has
    # reconnected: the step running through the restart is known, every other workflow is queued.
    # A step that ended while its worker was still disconnected would not survive (docs/reliability.md,
    # "What remains"); the step time limits outlast the outage, as production's (30 s, 60 s) do.
    stack = make_stack(
        env={
            "FAULT_PAUSE_AFTER": CHARGE,
            "CELERY_TASK_SOFT_TIME_LIMIT": "30",
            "CELERY_TASK_TIME_LIMIT": "35",
            "CELERY_VISIBILITY_TIMEOUT": "40",  # above the time limit plus the retry cap (2 s)
        }
    )
    stack.start(workers=0)
    worker = stack.start_worker("--concurrency", "1")
    order_ids = stack.place_orders(payloads(stock_up(), ORDERS))

    wait_for(lambda: (stack.fault_dir / f"paused-{CHARGE}").exists(), timeout=60, message="a charge running")
    before = statuses(order_ids)
    in_flight = ORDERS - sum(before[s] for s in FINAL_STATUSES)
    stack.redis.stop()  # no persistence: every queued, reserved and unacknowledged message is gone
    # The worker must see the broker gone, whatever its load, before it may be back.
    wait_for(lambda: "Connection to broker lost" in worker.log(), timeout=30, message="the worker losing Redis")
    time.sleep(OUTAGE_SECONDS)  # the outage itself
    stack.redis.start()  # same port: the worker must find it again by itself
    wait_for(lambda: worker.log().count("Connected to redis://") >= 2, timeout=60, message="the worker reconnecting")
    assert not (stack.fault_dir / f"resumed-{CHARGE}").exists(), "the paused charge went on during the outage"
    (stack.fault_dir / f"release-{CHARGE}").touch()
    # Beat starts with Redis back, so each workflow it sends again is one the outage lost.
    schedule_recovery(every_seconds=2)
    stack.start_beat()

    stack.wait_until_final(order_ids, timeout=180)  # a bound for a busy machine, not a clock
    audit = stack.audit(order_ids)
    recovered = recovered_orders(order_ids)
    record(
        "3. Redis restarted",
        audit.figures(),
        faults=f"Redis killed and restarted empty {OUTAGE_SECONDS} s after the worker lost it, with "
        f"{before['confirmed']} orders confirmed and {in_flight} queued or running (a charge paused just after "
        "charging until the worker had reconnected)",
        notes=f"the worker reconnected by itself; the stuck-workflow recovery job (every 2 s, "
        f"STUCK_WORKFLOW_MINUTES=0.1) sent {len(recovered)} lost workflows again and finished them",
    )
    assert in_flight >= ORDERS // 2, f"the restart came too late to hit running workflows: {before}"
    # The same worker process carried on: it reconnected rather than being restarted.
    assert worker.process.poll() is None and stack.workers == [worker]
    # The outage really lost messages, and the recovery job is what finished those orders.
    assert recovered, "no workflow was sent again: the restart lost nothing?"
    assert audit.confirmed == ORDERS, audit
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)


def test_a_task_acknowledged_after_the_worker_reconnected_to_a_restarted_redis_runs_once(
    make_stack: Callable[..., Stack],
) -> None:
    """A task runs while Redis restarts (keeping its data, as a Redis with persistence does) and
    ends once its worker has reconnected: its late acknowledgement goes to the channel the lost
    connection had, which kombu closed. The worker must live on (Celery 5.7 and kombu 5.7 exited
    with AttributeError: tasks_admin/kombu_fixes.py), and the message must be acknowledged, so
    that it is neither lost nor delivered again."""
    stack = make_stack(
        env={"CELERY_TASK_SOFT_TIME_LIMIT": "30", "CELERY_TASK_TIME_LIMIT": "35", "CELERY_VISIBILITY_TIMEOUT": "60"}
    )
    stack.start(workers=0, web=False)
    # Two pool processes, one left idle: the worker is waiting on Redis for more work (BRPOP) when
    # Redis goes, as a worker with spare capacity is. (With none idle it is not, and kombu's close
    # then stops short, leaving the channel a working pool: that acknowledgement went through.)
    worker = stack.start_worker("--concurrency", "2")
    broker = redis.Redis(port=stack.redis.port)
    tag = uuid.uuid4().hex[:8]
    with app.connection_for_write(stack.broker_url) as connection:
        app.send_task("tests.fakes.tasks.hold_until_released", args=[tag], connection=connection)
    wait_for(lambda: runs(tag, stack.fault_dir), timeout=30, message="the task running")
    assert broker.hlen("unacked") == 1

    stack.redis.stop(keep_data=True)
    wait_for(lambda: "Connection to broker lost" in worker.log(), timeout=30, message="the worker losing Redis")
    stack.redis.start()
    wait_for(lambda: worker.log().count("Connected to redis://") >= 2, timeout=60, message="the worker reconnecting")
    assert broker.hlen("unacked") == 1, "the restart lost the message: nothing left to test"
    (stack.fault_dir / f"release-{tag}").touch()  # the task ends, and is acknowledged, only now

    wait_for(
        lambda: not broker.hlen("unacked") or worker.process.poll() is not None,
        timeout=30,
        message="the acknowledgement",
    )
    assert worker.process.poll() is None, f"the worker exited:\n{worker.log()[-3000:]}"
    # Acknowledged: nothing is left, in the queue or out to a worker, that could run it again.
    assert (broker.hlen("unacked"), broker.llen("celery")) == (0, 0)
    assert len(runs(tag, stack.fault_dir)) == 1
