"""15. Failover on many hosts: the shop spread over network namespaces (tests/reliability/network.py),
a three-node RabbitMQ cluster with quorum queues, and a node lost in the middle of a batch.

Topology (addresses on one bridge, 10.213.N.0/24; nothing talks over loopback):

    db (.1: this machine; PostgreSQL through a proxy, the SMS gateway, the SMTP server)
    rabbit1 .10   rabbit2 .11   rabbit3 .12      one cluster, quorum queues on all three
    web .13       worker-a .14  worker-b .15     gunicorn; two workers (prefork)
    beat-a .16    beat-b .17                     one beat holds the lease, the other stands by

Every process is given all three nodes (Celery's failover broker URLs).
"""

import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import close_old_connections

from tests.fakes.sms_gateway import FakeSmsGateway
from tests.fakes.smtp_server import FakeSmtpServer
from tests.support import wait_for

from .harness import PgProxy, Stack
from .network import Network, RabbitCluster, require_network_namespaces
from .scenarios import payloads, schedule_recovery, stock_up

RABBITS = ["rabbit1", "rabbit2", "rabbit3"]
HOSTS = [*RABBITS, "web", "worker-a", "worker-b", "beat-a", "beat-b"]
ORDERS = 40


@pytest.fixture
def network() -> Iterator[Network]:
    """The hosts, deleted with everything running on them when the test ends, however it ends."""
    require_network_namespaces()
    network = Network(HOSTS)
    try:
        yield network.start()
    finally:
        network.stop()


@pytest.fixture
def cluster(network: Network, tmp_path: Path) -> Iterator[RabbitCluster]:
    cluster = RabbitCluster(network, RABBITS, tmp_path / "rabbitmq")
    try:
        cluster.start_all()
        yield cluster
    finally:
        for name in list(cluster.processes):
            cluster.kill(name)
        shutil.rmtree(cluster.directory, ignore_errors=True)


@pytest.fixture
def hosts_stack(
    network: Network, cluster: RabbitCluster, database_url: str, tmp_path: Path, request
) -> Iterator[Stack]:
    """The shop's processes, to be started on the hosts; PostgreSQL, the SMS gateway and the SMTP
    server on the `db` host's address."""
    database = urlsplit(database_url)
    proxy = PgProxy(database.hostname or "127.0.0.1", database.port or 5432, listen=network.gateway)
    auth = database.netloc.rpartition("@")[0]
    url = urlunsplit(database._replace(netloc=f"{auth}@{network.gateway}:{proxy.port}"))
    env = {"EMAIL_HOST": network.gateway, "CELERY_BROKER_QUEUE_TYPE": "quorum", "ALLOWED_HOSTS": network["web"].address}
    with FakeSmsGateway(network.gateway) as sms, FakeSmtpServer(network.gateway) as smtp:
        stack = Stack(tmp_path / "stack", url, sms, smtp, env=env, broker_url=cluster.url)
        try:
            yield stack
        finally:
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                print(stack.logs())
                print("\n".join(f"---- {name} ----\n{cluster.log(name)[-3000:]}" for name in RABBITS))
            stack.stop()
            proxy.close()


def orders_placed(order_ids_before: int) -> Callable[[], bool]:
    from orders.models import Order

    def more() -> bool:
        close_old_connections()
        return Order.objects.count() >= order_ids_before

    return more


def test_the_rabbitmq_node_leading_the_queues_killed_mid_batch_loses_and_repeats_nothing(
    network: Network, cluster: RabbitCluster, hosts_stack: Stack, record: Callable[..., None]
) -> None:
    stack = hosts_stack
    stack.start_worker(host=network["worker-a"])
    stack.start_worker(host=network["worker-b"])
    stack.start_web(host=network["web"])
    schedule_recovery()
    for beat in ("beat-a", "beat-b"):
        stack.start_beat(host=network[beat])
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
        "15. hosts: RabbitMQ node leading the quorum queues SIGKILLed mid-batch",
        audit.figures(),
        faults=f"SIGKILL of {leader} (every process on its host) with {ORDERS // 2} of {ORDERS} checkouts placed",
        notes=f"3-node RabbitMQ cluster on its own hosts (network namespaces), quorum queues; web, 2 worker "
        f"hosts and 2 beat hosts given all three nodes as failover URLs. {new_leader} took the lead; every "
        f"order final {settled:.1f} s after the kill; {leader} restarted and rejoined",
    )
    assert new_leader != leader
    assert audit.confirmed == ORDERS, audit
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)
