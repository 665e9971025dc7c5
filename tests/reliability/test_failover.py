"""16–21. Failover on many hosts: the shop spread over network namespaces (tests/reliability/network.py),
a three-node RabbitMQ cluster with quorum queues; a RabbitMQ node, a worker host, the beat host
holding the lease lost in the middle of the run, a worker host cut off the network and back, the
database unreachable from one worker host, checkouts while the web host cannot reach any broker node.

Topology (addresses on one bridge, 10.213.N.0/24; nothing talks over loopback):

    db (this machine: .1 the SMS gateway and the SMTP server, .2 PostgreSQL through a proxy)
    rabbit1 .10   rabbit2 .11   rabbit3 .12      one cluster, quorum queues on all three
    web .13       worker-a .14  worker-b .15     gunicorn; two workers (prefork)
    beat-a .16    beat-b .17                     one beat holds the lease, the other stands by

Every process is given all three nodes (Celery's failover broker URLs).
"""

import re
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import close_old_connections
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from tasks_admin.models import SchedulerLock
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.fakes.smtp_server import FakeSmtpServer
from tests.fakes.tcp_proxy import TcpProxy
from tests.support import wait_for

from .harness import Audit, Stack
from .network import Network, RabbitCluster, hosts
from .scenarios import (
    no_email_between_accepted_and_recorded,
    payloads,
    recovered_orders,
    schedule_recovery,
    stock_up,
)
from .test_two_beats import JOBS, LEASE, PHASE_RUNS, sent_at, watch

RABBITS = ["rabbit1", "rabbit2", "rabbit3"]
HOSTS = [*RABBITS, "web", "worker-a", "worker-b", "beat-a", "beat-b"]
ORDERS = 40
IDLE_IN_TRANSACTION = 5  # seconds (DB_IDLE_IN_TRANSACTION_TIMEOUT)
HEARTBEAT = 4  # seconds (CELERY_BROKER_HEARTBEAT): how soon RabbitMQ gives up on a host cut off
DB_NETWORK_TIMEOUT = 4  # seconds: how soon a worker gives up on a database it cannot reach
DB_GUARD = 1  # seconds between a worker's probes of the database (tasks_admin/database_guard.py)
OUTAGE_ORDERS = 10
# Three attempts (the publish retry policy), each a node's connection timeout (1 s), the pauses between them.
MAX_CHECKOUT_SECONDS = 4.0


# One network and one cluster for the module's scenarios: booting three nodes is most of their time.
@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    with hosts(HOSTS) as network:
        yield network


@pytest.fixture(scope="module")
def cluster(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    cluster = RabbitCluster(network, RABBITS, tmp_path_factory.mktemp("rabbitmq"))
    try:
        cluster.start_all()
        yield cluster
    finally:
        for name in list(cluster.processes):
            cluster.kill(name)
        shutil.rmtree(cluster.directory, ignore_errors=True)


@contextmanager
def shop_on_hosts(
    network: Network, database_url: str, directory: Path, broker_url: str, env: dict[str, str]
) -> Iterator[Stack]:
    """The shop's processes, to be started on the hosts; PostgreSQL (through a proxy), the SMS
    gateway and the SMTP server on the `db` host's addresses. Also for test_failover_redis.py."""
    database = urlsplit(database_url)
    proxy = TcpProxy(database.hostname or "127.0.0.1", database.port or 5432, listen=network.db)
    auth = database.netloc.rpartition("@")[0]
    url = urlunsplit(database._replace(netloc=f"{auth}@{network.db}:{proxy.port}"))
    env = {"EMAIL_HOST": network.gateway, "ALLOWED_HOSTS": network["web"].address, **env}
    with FakeSmsGateway(network.gateway) as sms, FakeSmtpServer(network.gateway) as smtp:
        stack = Stack(directory, url, sms, smtp, env=env, broker_url=broker_url)
        try:
            yield stack
        finally:
            stack.stop()
            proxy.close()


@pytest.fixture
def hosts_stack(
    network: Network, cluster: RabbitCluster, database_url: str, tmp_path: Path, request
) -> Iterator[Stack]:
    env = {"CELERY_BROKER_QUEUE_TYPE": "quorum"}
    with shop_on_hosts(network, database_url, tmp_path / "stack", cluster.url, env) as stack:
        yield stack
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(stack.logs())
            print("\n".join(f"---- {name} ----\n{cluster.log(name)[-3000:]}" for name in RABBITS))


def orders_placed(count: int) -> Callable[[], bool]:
    from orders.models import Order

    def more() -> bool:
        close_old_connections()
        return Order.objects.count() >= count

    return more


def orders_confirmed(order_ids: list[str], count: int) -> Callable[[], bool]:
    from orders.models import Order

    def enough() -> bool:
        close_old_connections()
        return Order.objects.filter(pk__in=order_ids, status="confirmed").count() >= count

    return enough


def assert_every_order_confirmed_once(audit: Audit) -> None:
    assert audit.confirmed == ORDERS, audit
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)


def timed_checkouts(stack: Stack) -> tuple[list[tuple[int, str]], list[str], list[float]]:
    """OUTAGE_ORDERS checkouts one after the other, so that each one's own wait is timed: their
    (HTTP status, order status), order ids and seconds."""
    statuses, order_ids, seconds = [], [], []
    for payload in payloads(stock_up(), OUTAGE_ORDERS):
        started = time.monotonic()
        status, body = stack.checkout(payload)
        seconds.append(time.monotonic() - started)
        statuses.append((status, body.get("status")))
        order_ids.append(body.get("id"))
    return statuses, order_ids, seconds


def start_shop(stack: Stack, network: Network) -> None:
    """Two worker hosts, the web host, and the two beat hosts (the recovery job on a test clock)."""
    stack.start_worker(host=network["worker-a"])
    stack.start_worker(host=network["worker-b"])
    stack.start_web(host=network["web"])
    schedule_recovery()
    for beat in ("beat-a", "beat-b"):
        stack.start_beat(host=network[beat])


def test_the_rabbitmq_node_leading_the_queues_killed_mid_batch_loses_and_repeats_nothing(
    network: Network, cluster: RabbitCluster, hosts_stack: Stack, record: Callable[..., None]
) -> None:
    stack = hosts_stack
    start_shop(stack, network)
    leader = cluster.leader("orders", via=RABBITS[-1])
    survivor = next(name for name in RABBITS if name != leader)
    batch = payloads(stock_up(), ORDERS)

    order_ids = stack.place_orders(batch[: ORDERS // 2], concurrency=4)
    with ThreadPoolExecutor(1) as pool:
        rest = pool.submit(stack.place_orders, batch[ORDERS // 2 :], 4)
        wait_for(orders_placed(ORDERS // 2 + 4), timeout=60, message="the second half under way")
        cluster.kill(leader)  # SIGKILL mid-batch
        killed_at = time.monotonic()
        order_ids += rest.result()
    new_leader = cluster.leader("orders", via=survivor)

    stack.wait_until_final(order_ids, timeout=240)
    settled = time.monotonic() - killed_at
    cluster.start(leader)  # it comes back and rejoins the cluster
    cluster.wait_running(RABBITS)
    audit = stack.audit(order_ids)
    record(
        "16. hosts: RabbitMQ node leading the quorum queues SIGKILLed mid-batch",
        audit.figures(),
        faults=f"SIGKILL of {leader} (every process on its host) with {ORDERS // 2} of {ORDERS} checkouts placed",
        notes=f"3-node RabbitMQ cluster on its own hosts (network namespaces), quorum queues; web, 2 worker "
        f"hosts and 2 beat hosts given all three nodes as failover URLs. {new_leader} took the lead; every "
        f"order final {settled:.1f} s after the kill; {leader} restarted and rejoined",
    )
    assert new_leader != leader
    assert_every_order_confirmed_once(audit)


def test_a_worker_host_killed_outright_mid_run_leaves_its_tasks_to_the_other_host(
    network: Network, hosts_stack: Stack, record: Callable[..., None]
) -> None:
    stack = hosts_stack
    start_shop(stack, network)
    doomed = stack.workers[0]  # on worker-a
    order_ids = stack.place_orders(payloads(stock_up(), ORDERS), concurrency=4)
    wait_for(orders_confirmed(order_ids, ORDERS // 4), timeout=120, message="a quarter of the orders confirmed")
    assert " received" in doomed.log(), "worker-a took no task before its host died"

    with no_email_between_accepted_and_recorded(stack):
        network.kill_host("worker-a")  # every process on the host SIGKILLed: the machine lost its power
        killed_at = time.monotonic()
        doomed.process.wait()
    stack.workers.remove(doomed)
    confirmed_then = orders_confirmed(order_ids, ORDERS)()

    stack.wait_until_final(order_ids, timeout=240)
    settled = time.monotonic() - killed_at
    audit = stack.audit(order_ids)
    record(
        "17. hosts: a worker host killed outright mid-run",
        audit.figures(),
        faults="SIGKILL of every process on worker-a (main process and pool) with a quarter of "
        f"{ORDERS} orders confirmed, e-mails in flight held at RCPT (none accepted and unrecorded)",
        notes="quorum queues on the 3-node cluster: the dead host's unacknowledged messages went to worker-b "
        f"once RabbitMQ saw its connection close; every order final {settled:.1f} s after the kill"
        + (" (all were already confirmed)" if confirmed_then else ""),
    )
    assert_every_order_confirmed_once(audit)


def test_the_beat_host_holding_the_lease_lost_the_standby_host_takes_over_and_nothing_runs_twice(
    network: Network, hosts_stack: Stack, record: Callable[..., None]
) -> None:
    for name, seconds in JOBS.items():
        interval = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)[0]
        PeriodicTask.objects.create(name=name, task="tests.fakes.tasks.sleep_for", args="[0]", interval=interval)
    stack = hosts_stack
    stack.start_worker(host=network["worker-b"])
    beats = {name: stack.start_beat(host=network[name], BEAT_LOCK_SECONDS=str(LEASE)) for name in ("beat-a", "beat-b")}
    holder = wait_for(lambda: SchedulerLock.objects.values_list("owner", flat=True).first(), timeout=60)
    [lost] = [name for name, beat in beats.items() if f":{beat.process.pid}:" in holder]
    [standby] = [name for name in beats if name != lost]
    wait_for(lambda: sent_at("every-1s"), timeout=30, message="the first run")

    start = time.time()
    both_up = watch(start, "runs with both beat hosts up")
    standby_log = beats[standby].log()
    network.kill_host(lost)  # the lease holder's host loses its power
    beats[lost].process.wait()
    killed = time.time()
    lease = SchedulerLock.objects.filter(owner=holder).values_list("expires_at", flat=True).first()
    assert lease, "the other beat took over before the lost beat's lease could be read"
    wait_for(
        lambda: "holding the scheduler lease" in beats[standby].log()[len(standby_log) :],
        timeout=LEASE + 30,
        message="the standby beat host taking over",
    )
    end = watch(killed, "runs sent from the standby host")

    phases = {"both up": (start, both_up), "after the loss": (killed, end)}
    counts = {
        (phase, name): len([t for t in sent_at(name, since) if t <= until])
        for phase, (since, until) in phases.items()
        for name in JOBS
    }
    took_over = sent_at("every-1s", killed)[0] - lease.timestamp()
    record(
        "18. hosts: the beat host holding the lease lost",
        {"orders placed": "—", "confirmed": "—", "lost": 0},
        faults=f"beat-a and beat-b on their own hosts (lease {LEASE} s); every process on the lease holder's "
        f"host ({lost}) SIGKILLed once every job had run {PHASE_RUNS} times",
        notes="runs per job, both up / after the loss: "
        + ", ".join(f"{name} {counts['both up', name]} / {counts['after the loss', name]}" for name in JOBS)
        + f"; {standby}'s first run came {took_over:.1f} s after the lost host's lease lapsed",
    )
    assert "Sending due task" not in standby_log, standby_log[-3000:]
    for (phase, name), count in counts.items():
        since, until = phases[phase]
        assert count <= (until - since) / JOBS[name] + 1, (phase, name, count, until - since)
    assert took_over >= 0, took_over


def test_a_worker_host_cut_off_mid_run_then_back_runs_nothing_twice(
    network: Network, cluster: RabbitCluster, hosts_stack: Stack, record: Callable[..., None]
) -> None:
    stack = hosts_stack
    stack.extra_env["CELERY_BROKER_HEARTBEAT"] = str(HEARTBEAT)
    # Cut off mid-transaction, worker-a's session would hold its row locks and stall worker-b:
    # PostgreSQL ends it after this (settings/core.py).
    stack.extra_env["DB_IDLE_IN_TRANSACTION_TIMEOUT"] = str(IDLE_IN_TRANSACTION)
    start_shop(stack, network)
    cut_off = stack.workers[0]  # on worker-a
    order_ids = stack.place_orders(payloads(stock_up(), ORDERS), concurrency=4)
    wait_for(orders_confirmed(order_ids, ORDERS // 4), timeout=120, message="a quarter of the orders confirmed")
    assert " received" in cut_off.log(), "worker-a took no task before it was cut off"

    with no_email_between_accepted_and_recorded(stack):
        network.cut("worker-a")  # its link down: its processes run on, unable to reach anything
        cut_at = time.monotonic()
    # The premise, waited for rather than assumed: RabbitMQ gives worker-a up (missed heartbeats) and
    # hands what it held to worker-b. A cut shorter than that, with worker-a holding nothing the
    # orders wait for, would end before RabbitMQ noticed it (seen on a loaded machine).
    address = network["worker-a"].address
    wait_for(
        lambda: not cluster.connections_from(address), timeout=60, interval=1, message="RabbitMQ dropping worker-a"
    )
    stack.wait_until_final(order_ids, timeout=240, settled=False)  # worker-b alone
    final_after = time.monotonic() - cut_at
    received_before = cut_off.log().count(" received")
    network.restore("worker-a")
    wait_for(lambda: stack.answers_ping(cut_off), timeout=120, message="worker-a answering through the broker")
    stack.wait_until_final(order_ids, timeout=120)
    audit = stack.audit(order_ids)
    record(
        "19. hosts: a worker host cut off the network mid-run, then back",
        audit.figures(),
        faults=f"worker-a's link down with a quarter of {ORDERS} orders confirmed, e-mails in flight held at RCPT "
        "(none accepted and unrecorded), up again once all were final",
        notes=f"quorum queues on the 3-node cluster, AMQP heartbeat {HEARTBEAT} s, PostgreSQL ending a session idle "
        f"in a transaction after {IDLE_IN_TRANSACTION} s: what worker-a held "
        f"unacknowledged went to worker-b once RabbitMQ missed its heartbeats; every order final "
        f"{final_after:.1f} s after the cut, with worker-a still off; worker-a, back, answered a ping through "
        f"the broker (it had received {received_before} tasks)",
    )
    assert_every_order_confirmed_once(audit)


def test_the_database_unreachable_from_one_worker_host_its_tasks_retry_and_the_other_host_carries_them(
    network: Network, hosts_stack: Stack, record: Callable[..., None]
) -> None:
    stack = hosts_stack
    # How soon libpq gives up on PostgreSQL behind the partition (settings/core.py); defaults 5 and 20 s.
    stack.extra_env.update(
        DB_CONNECT_TIMEOUT="2", DB_NETWORK_TIMEOUT=str(DB_NETWORK_TIMEOUT), DB_GUARD_SECONDS=str(DB_GUARD)
    )
    stack.extra_env["DB_IDLE_IN_TRANSACTION_TIMEOUT"] = str(IDLE_IN_TRANSACTION)
    start_shop(stack, network)
    partitioned = stack.workers[0]  # on worker-a
    order_ids = stack.place_orders(payloads(stock_up(), ORDERS), concurrency=4)
    wait_for(orders_confirmed(order_ids, ORDERS // 4), timeout=120, message="a quarter of the orders confirmed")
    assert " received" in partitioned.log(), "worker-a took no task before the partition"

    log_before = len(partitioned.log())
    network.partition("worker-a", network.db)  # PostgreSQL silent to worker-a; brokers, providers and worker-b are not
    cut_at = time.monotonic()
    stack.wait_until_final(order_ids, timeout=240, settled=False)  # worker-a still partitioned
    final_after = time.monotonic() - cut_at
    paused = "The database is unreachable: no longer consuming" in partitioned.log()[log_before:]
    network.heal("worker-a", network.db)
    wait_for(
        lambda: "The database is reachable again" in partitioned.log()[log_before:],
        timeout=30,
        message="worker-a consuming again",
    )
    stack.wait_until_final(order_ids, timeout=120)
    during = partitioned.log()[log_before:]
    retried = set(re.findall(r"\[([0-9a-f-]{36})\] retry: ", during))
    carried = {task_id for task_id in retried if f"[{task_id}] succeeded" in stack.workers[1].log()}
    audit = stack.audit(order_ids)
    record(
        "20. hosts: the database unreachable from one worker host",
        audit.figures(),
        faults=f"PostgreSQL's address unreachable from worker-a (packets dropped) with a quarter of {ORDERS} "
        "orders confirmed, reachable again once all were final",
        notes=f"worker-a's database guard (probe every {DB_GUARD} s) stopped it consuming, and resumed it once "
        f"healed; libpq gave up after {DB_NETWORK_TIMEOUT} s (DB_NETWORK_TIMEOUT) on what it had taken: "
        f"{len(retried)} tasks retried through the broker, {len(carried)} of them run by worker-b; every order "
        f"final {final_after:.1f} s after the partition, with worker-a still cut off",
    )
    assert paused, "worker-a went on taking tasks it could not run"
    assert_every_order_confirmed_once(audit)


def test_checkouts_while_the_web_host_cannot_reach_any_broker_node_are_accepted_and_run_once_it_can(
    network: Network, hosts_stack: Stack, record: Callable[..., None]
) -> None:
    stack = hosts_stack
    start_shop(stack, network)
    rabbits = [network[name].address for name in RABBITS]
    network.partition("web", *rabbits)
    cut_at = time.monotonic()
    statuses, order_ids, seconds = timed_checkouts(stack)
    network.heal("web", *rabbits)
    stack.wait_until_final(order_ids, timeout=240)
    settled = time.monotonic() - cut_at
    audit = stack.audit(order_ids)
    recovered = recovered_orders(order_ids)
    record(
        "21. hosts: checkouts while the web host cannot reach any broker node",
        audit.figures(),
        faults=f"the three RabbitMQ nodes unreachable from the web host (packets dropped) during {OUTAGE_ORDERS} "
        "checkouts, reachable again once they were answered",
        notes=f"every checkout answered 202 pending in {min(seconds):.2f}–{max(seconds):.2f} s "
        f"(CELERY_BROKER_CONNECTION_TIMEOUT); the stuck-workflow recovery job, sent by beat and run by the "
        f"workers, which reach the cluster, sent {len(recovered)} workflows; every order final "
        f"{settled:.1f} s after the partition began",
    )
    assert statuses == [(202, "pending")] * OUTAGE_ORDERS, statuses
    # The web host sent none of them: each order's workflow went out through the recovery job.
    assert len(recovered) == OUTAGE_ORDERS, recovered
    assert max(seconds) < MAX_CHECKOUT_SECONDS, seconds
    assert audit.confirmed == OUTAGE_ORDERS, audit
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)
