"""22–24. The many-hosts scenarios that make sense on a Redis broker: Redis on a host of its own,
the same web, worker and beat hosts as test_failover.py (tests/reliability/network.py). Redis has
no replication here and no heartbeats: a worker's unacknowledged messages come back only when the
visibility timeout lapses (8 s in the stack), restored by a worker that is still there.

    db (this machine: .1 the SMS gateway and the SMTP server, .2 PostgreSQL through a proxy)
    redis .10        one redis-server, the broker
    web .11          gunicorn
    worker-a .12     worker-b .13     two workers (prefork)
    beat-a .14       beat-b .15       one holds the lease
"""

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from shop import embedded_redis
from tests.support import wait_for

from .harness import Stack
from .network import Network, hosts
from .scenarios import no_email_between_accepted_and_recorded, payloads, recovered_orders, stock_up
from .test_failover import (
    MAX_CHECKOUT_SECONDS,
    ORDERS,
    OUTAGE_ORDERS,
    assert_every_order_confirmed_once,
    orders_confirmed,
    shop_on_hosts,
    start_shop,
    timed_checkouts,
)

HOSTS = ["redis", "web", "worker-a", "worker-b", "beat-a", "beat-b"]
PASSWORD = "hosts-test"  # off loopback, Redis takes no client without one (protected mode)


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    with hosts(HOSTS) as network:
        yield network


@pytest.fixture(scope="module")
def broker(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """redis-server on the `redis` host, with a password as in production, keeping nothing on disk."""
    address = network["redis"].address
    directory = tmp_path_factory.mktemp("redis-host")
    argv = [embedded_redis.server_binary(), "--bind", address, "--port", "6379", "--requirepass", PASSWORD]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
    process = subprocess.Popen([*network["redis"].exec, *argv], stdout=subprocess.DEVNULL)
    try:
        embedded_redis.wait_until_ready(redis.Redis(host=address, password=PASSWORD, socket_timeout=1), address)
        yield f"redis://:{PASSWORD}@{address}:6379/0"
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def hosts_stack(network: Network, broker: str, database_url: str, tmp_path: Path, request) -> Iterator[Stack]:
    with shop_on_hosts(network, database_url, tmp_path / "stack", broker, {}) as stack:
        redis.Redis.from_url(broker).flushdb()  # nothing left over from the previous scenario
        yield stack
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(stack.logs())


def test_redis_a_worker_host_killed_outright_mid_run_leaves_its_tasks_to_the_other_host(
    network: Network, hosts_stack: Stack, record: Callable[..., None]
) -> None:
    stack = hosts_stack
    start_shop(stack, network)
    doomed = stack.workers[0]  # on worker-a
    order_ids = stack.place_orders(payloads(stock_up(), ORDERS), concurrency=4)
    wait_for(orders_confirmed(order_ids, ORDERS // 4), timeout=120, message="a quarter of the orders confirmed")
    assert " received" in doomed.log(), "worker-a took no task before its host died"

    with no_email_between_accepted_and_recorded(stack):
        network.kill_host("worker-a")
        killed_at = time.monotonic()
        doomed.process.wait()
    stack.workers.remove(doomed)
    stack.wait_until_final(order_ids, timeout=240)
    settled = time.monotonic() - killed_at
    audit = stack.audit(order_ids)
    record(
        "22. Redis hosts: a worker host killed outright mid-run",
        audit.figures(),
        faults=f"SIGKILL of every process on worker-a with a quarter of {ORDERS} orders confirmed, e-mails in "
        "flight held at RCPT (none accepted and unrecorded); Redis on a host of its own",
        notes="what worker-a had reserved came back once the visibility timeout (8 s) lapsed, restored by "
        f"worker-b; every order final {settled:.1f} s after the kill",
    )
    assert_every_order_confirmed_once(audit)


def test_redis_a_worker_host_cut_off_mid_run_then_back_runs_nothing_twice(
    network: Network, hosts_stack: Stack, record: Callable[..., None]
) -> None:
    stack = hosts_stack
    stack.extra_env["DB_IDLE_IN_TRANSACTION_TIMEOUT"] = "5"  # as in scenario 19
    start_shop(stack, network)
    cut_off = stack.workers[0]  # on worker-a
    order_ids = stack.place_orders(payloads(stock_up(), ORDERS), concurrency=4)
    wait_for(orders_confirmed(order_ids, ORDERS // 4), timeout=120, message="a quarter of the orders confirmed")
    assert " received" in cut_off.log(), "worker-a took no task before it was cut off"

    with no_email_between_accepted_and_recorded(stack):
        network.cut("worker-a")
        cut_at = time.monotonic()
    stack.wait_until_final(order_ids, timeout=240, settled=False)  # worker-b alone
    final_after = time.monotonic() - cut_at
    network.restore("worker-a")
    wait_for(lambda: stack.answers_ping(cut_off), timeout=120, message="worker-a answering through the broker")
    stack.wait_until_final(order_ids, timeout=120)
    audit = stack.audit(order_ids)
    record(
        "23. Redis hosts: a worker host cut off the network mid-run, then back",
        audit.figures(),
        faults=f"worker-a's link down with a quarter of {ORDERS} orders confirmed, e-mails in flight held at RCPT "
        "(none accepted and unrecorded), up again once all were final",
        notes="Redis has no heartbeat: what worker-a had reserved was restored by worker-b once the visibility "
        f"timeout (8 s) lapsed, while worker-a still held it; every order final {final_after:.1f} s after the "
        "cut; worker-a, back, answered a ping through the broker",
    )
    assert cut_off.process.poll() is None, "worker-a died once back on the network"
    assert_every_order_confirmed_once(audit)


def test_redis_checkouts_while_the_web_host_cannot_reach_redis_are_accepted_and_run_once_it_can(
    network: Network, hosts_stack: Stack, record: Callable[..., None]
) -> None:
    stack = hosts_stack
    start_shop(stack, network)
    network.partition("web", network["redis"].address)
    cut_at = time.monotonic()
    statuses, order_ids, seconds = timed_checkouts(stack)
    network.heal("web", network["redis"].address)
    stack.wait_until_final(order_ids, timeout=240)
    settled = time.monotonic() - cut_at
    audit = stack.audit(order_ids)
    recovered = recovered_orders(order_ids)
    record(
        "24. Redis hosts: checkouts while the web host cannot reach Redis",
        audit.figures(),
        faults=f"Redis unreachable from the web host (packets dropped) during {OUTAGE_ORDERS} checkouts",
        notes=f"every checkout answered 202 pending in {min(seconds):.2f}–{max(seconds):.2f} s (three attempts "
        f"at most, each waiting CELERY_BROKER_CONNECTION_TIMEOUT); the recovery job sent {len(recovered)} "
        f"workflows; every order final {settled:.1f} s after the partition began",
    )
    assert statuses == [(202, "pending")] * OUTAGE_ORDERS, statuses
    assert max(seconds) < MAX_CHECKOUT_SECONDS, seconds
    assert len(recovered) == OUTAGE_ORDERS, recovered
    assert audit.confirmed == OUTAGE_ORDERS, audit
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)
