"""`python -m benchmarks scale` (`make bench-scale`): order throughput with the workers on one
host against two, and on Redis against RabbitMQ's classic and quorum queues, in one run.

The hosts are Linux network namespaces on a bridge (tests/reliability/network.py, the failover
tests' harness, imported rather than copied); this machine is the `db` host on the bridge's
address. The workers reach PostgreSQL and the broker over the bridge, each through a socat
relay on the bridge address (PostgreSQL and the machine's RabbitMQ listen on loopback only), the
same path for every configuration:

    db  10.213.N.1   this machine: the benchmark (checkouts), PostgreSQL, a private Redis, the
     │               machine's RabbitMQ (a private vhost per queue type), a socat relay to each
     ├── worker-a .10   one host:  orders (prefork 4) + notifications (threads 20)
     │                  two hosts: orders (prefork 2) + notifications (threads 10)
     └── worker-b .11   two hosts: orders (prefork 2) + notifications (threads 10)

and, for reference, the one-host layout with no namespace, over loopback (`make bench`'s path).

Each measurement is the throughput figure's (workflow.py): orders placed with no worker running
(from a process started with the configuration's broker settings: place_orders.py), then drained;
orders ÷ (last confirmation − first step finished), from the database. The workers of a layout
start together. Rounds take the configurations in turn, each round starting one further along,
so a slow spell of the shared machine does not fall on one configuration only; each figure is
the median of its rounds, with their min–max. The machine's CPU (/proc/stat) and the workers'
(their main processes and pools) are sampled during each drain: on 2 cores they say what bounds
the figures, and orders/s per worker core what an order costs the workers.
"""

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from urllib.parse import urlsplit, urlunsplit

import amqp
import celery
import django
import psutil
from kombu import Connection

from tests.reliability.network import Network

from . import workflow
from .database import BenchmarkError, scratch_database, scratch_name
from .stack import BIN, ROOT, Process, Stack

Log = Callable[[str], None]

RABBITMQ = "127.0.0.1:5672"  # the machine's RabbitMQ (guest may log in over loopback only)
HOSTS = ["worker-a", "worker-b"]
_ORDERS, _NOTIFICATIONS = workflow.PRODUCTION_WORKERS


def _halved(args: tuple[str, ...]) -> tuple[str, ...]:
    """The same worker with half its pool (`--concurrency`)."""
    at = args.index("--concurrency") + 1
    return (*args[:at], str(int(args[at]) // 2), *args[at + 1 :])


# The README's production layout on one host, or halved on each of two: the same pool in total.
# The reference: the production layout on this machine, over loopback (`make bench`'s path).
LOOPBACK = "this machine"
LAYOUTS = {
    LOOPBACK: {"db": (_ORDERS, _NOTIFICATIONS)},
    "one host": {"worker-a": (_ORDERS, _NOTIFICATIONS)},
    "two hosts": {host: (_halved(_ORDERS), _halved(_NOTIFICATIONS)) for host in HOSTS},
}
BROKERS = {"redis": "Redis", "classic": "RabbitMQ classic queues", "quorum": "RabbitMQ quorum queues"}
SETUPS = (
    ("redis", "one host"),
    ("redis", "two hosts"),
    ("classic", "one host"),
    ("quorum", "one host"),
    ("redis", LOOPBACK),
)
QUEUES = ("celery", "orders", "notifications")


@dataclass
class Result:
    broker: str
    layout: str
    rates: list[float] = field(default_factory=list)  # orders/s, a round each
    machine_busy: list[float] = field(default_factory=list)  # share of the machine's CPU busy, a round each
    worker_cores: list[float] = field(default_factory=list)  # cores' worth the workers used, a round each

    @property
    def per_core(self) -> list[float]:
        """Orders a second per core's worth of CPU the workers got, a round each: what an order
        costs them, which a busy machine's neighbours do not change as much as the rate."""
        return [rate / cores for rate, cores in zip(self.rates, self.worker_cores, strict=True) if cores > 0]

    @property
    def label(self) -> str:
        where = {"one host": "one worker host", "two hosts": "two worker hosts"}.get(self.layout, "over loopback")
        return f"{BROKERS[self.broker]}, {where}"

    def as_dict(self) -> dict:
        return {
            "broker": self.broker,
            "layout": self.layout,
            "label": self.label,
            "orders_per_second": round(median(self.rates), 2),
            "min": round(min(self.rates), 2),
            "max": round(max(self.rates), 2),
            "rounds": [round(rate, 2) for rate in self.rates],
            "machine_cpu_busy": [round(share, 3) for share in self.machine_busy],
            "worker_cores": [round(cores, 2) for cores in self.worker_cores],
            "orders_per_worker_core_second": [round(rate, 2) for rate in self.per_core],
        }


def require_hosts() -> None:
    """Namespaces need root and `ip`; the relays, socat."""
    if os.geteuid() != 0:
        raise BenchmarkError("The scaling benchmark builds network namespaces: it needs root.")
    for tool in ("ip", "socat", "rabbitmqctl"):
        if not shutil.which(tool):
            raise BenchmarkError(f"The scaling benchmark needs `{tool}`.")


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


@contextmanager
def relay(listen: str, target: str, directory: Path) -> Iterator[str]:
    """socat from `listen` (an address on the bridge) to `target` (host:port on loopback); yields
    the address:port it listens on. No Nagle on either side: the relayed protocols are chatty."""
    port = _free_port(listen)
    argv = ["socat", f"TCP-LISTEN:{port},bind={listen},reuseaddr,fork,nodelay", f"TCP:{target},nodelay"]
    process = Process(f"socat-{target.rpartition(':')[2]}", argv, dict(os.environ), directory).start()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((listen, port), timeout=1).close()
            break
        except OSError:
            if process.process.poll() is not None or time.monotonic() > deadline:
                raise BenchmarkError(f"socat did not listen on {listen}:{port}:\n{process.log()}") from None
            time.sleep(0.05)
    try:
        yield f"{listen}:{port}"
    finally:
        process.stop(timeout=5)


def _rabbitmqctl(*args: str) -> None:
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise BenchmarkError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")


@contextmanager
def vhost(name: str) -> Iterator[str]:
    """A vhost of the run's own on the machine's RabbitMQ, deleted after: queues of one type
    cannot be redeclared as the other (PRECONDITION_FAILED)."""
    _rabbitmqctl("add_vhost", name)
    try:
        _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=60)


class CpuSampler:
    """Every half second: the machine's busy and total CPU time (/proc/stat, clock ticks) and the
    CPU seconds of the workers being measured (`pids`: their main processes, and their pools)."""

    def __init__(self) -> None:
        self._pids: list[int] = []
        self._seen: dict[int, float] = {}  # CPU seconds each process had when last seen
        self._generation = 0  # the measurement a sample belongs to: a new one each time pids are set
        self.samples: list[tuple[int, float, int, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(0.5)

    @property
    def pids(self) -> list[int]:
        return self._pids

    @pids.setter
    def pids(self, pids: list[int]) -> None:
        """The workers to follow from now on (none: between measurements)."""
        self._pids, self._seen, self._generation = list(pids), {}, self._generation + 1

    def sample(self) -> tuple[int, float, int, int, float]:
        fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
        idle = fields[3] + fields[4]  # idle, iowait
        seen, generation = self._seen, self._generation
        for pid in self._pids:
            try:
                processes = [psutil.Process(pid)]
                processes += processes[0].children(recursive=True)
            except psutil.Error:
                continue  # exited: its last sample stands
            for process in processes:
                try:
                    times = process.cpu_times()  # a pool child that has exited keeps its last sample
                    seen[process.pid] = max(seen.get(process.pid, 0.0), times.user + times.system)
                except psutil.Error:
                    continue
        return generation, time.time(), sum(fields) - idle, sum(fields), sum(seen.values())

    def during(self, first: float, last: float) -> tuple[float, float]:
        """The machine's busy share and the workers' cores from the last sample before `first` to
        the first after `last`, among the samples of the measurement under way."""
        current = [sample for sample in self.samples if sample[0] == self._generation]
        before = [sample for sample in current if sample[1] <= first] or current[:1]
        after = [sample for sample in current if sample[1] >= last] or current[-1:]
        if not before or not after or after[0][1] <= before[-1][1]:
            return float("nan"), float("nan")
        (_, t0, busy0, total0, workers0), (_, t1, busy1, total1, workers1) = before[-1], after[0]
        return (busy1 - busy0) / max(1, total1 - total0), (workers1 - workers0) / (t1 - t0)


class Bench:
    """The network, the relays and the brokers of one run."""

    def __init__(self, stack: Stack, network: Network, database_url: str, log: Log) -> None:
        self.stack, self.network, self.log = stack, network, log
        self.database_url = database_url  # over the bridge, for the workers
        self.broker_urls: dict[str, tuple[str, str]] = {}  # broker: (from this machine, from the hosts)
        self._started = 0

    def env(self, broker: str) -> dict[str, str]:
        return {"CELERY_BROKER_QUEUE_TYPE": "quorum" if broker == "quorum" else "classic"}

    def place(self, broker: str, orders: int) -> list[str]:
        """The orders placed by a process with the broker's settings (place_orders.py)."""
        env = self.stack.env(CELERY_BROKER_URL=self.broker_urls[broker][0], **self.env(broker))
        argv = [sys.executable, "-m", "benchmarks.place_orders", str(orders)]
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode:
            raise BenchmarkError(f"Placing the orders failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout)

    def start(self, broker: str, layout: str, sampler: CpuSampler) -> list[Process]:
        """The layout's workers on their hosts, started together, once each answers a ping."""
        started: dict[str, Process] = {}
        on_hosts = layout != LOOPBACK  # the reference layout runs here, over loopback, as `make bench` does
        env = self.stack.env(
            DATABASE_URL=self.database_url if on_hosts else self.stack.database_url,
            CELERY_BROKER_URL=self.broker_urls[broker][on_hosts],
            **workflow.PROVIDERS,
            **self.env(broker),
        )
        for host_name, workers in LAYOUTS[layout].items():
            prefix = self.network[host_name].exec if on_hosts else ()
            for args in workers:
                self._started += 1
                name = f"worker{self._started}-{host_name}"
                hostname = f"{name}@{socket.gethostname()}"
                argv = [*prefix, str(BIN / "celery"), "-A", "shop", "worker", "--hostname", hostname, *args]
                process = Process(name, argv, env, self.stack.directory).start()
                self.stack.processes.append(process)
                started[hostname] = process
        sampler.pids = [process.process.pid for process in started.values()]
        # A Celery app of its own per broker: the shop's app would ping over its connection pool,
        # which is bound to the broker it first connected to.
        pinger = celery.Celery("scale-ping", broker=self.broker_urls[broker][0], set_as_current=False)
        pending, deadline = set(started), time.monotonic() + 120
        try:
            while pending:
                for reply in pinger.control.ping(destination=sorted(pending), timeout=0.5):
                    pending -= set(reply)
                for hostname in pending:
                    process = started[hostname]
                    if process.process.poll() is not None or time.monotonic() > deadline:
                        raise BenchmarkError(f"{process.name} did not start:\n{process.log()[-3000:]}")
        finally:
            pinger.close()
        return list(started.values())

    def purge(self, broker: str) -> None:
        """Empty the broker between measurements (the last e-mails and SMS may still be queued)."""
        if broker == "redis":
            self.stack.purge()
            return
        with Connection(self.broker_urls[broker][0]) as connection:
            for name in QUEUES:
                channel = connection.channel()
                try:
                    channel.queue_purge(name)
                except amqp.exceptions.NotFound:
                    pass  # not declared yet
                finally:
                    try:
                        channel.close()
                    except Exception:  # noqa: BLE001  (the channel closed by the error above)
                        pass

    def measure(self, broker: str, layout: str, orders: int, sampler: CpuSampler) -> tuple[float, float, float]:
        """Orders/s, the machine's CPU busy share and the workers' cores during the drain."""
        self.purge(broker)
        workflow._reset()
        workflow._catalog()
        placing = time.monotonic()
        order_ids = self.place(broker, orders)
        placed = time.monotonic()
        started = self.start(broker, layout, sampler)
        up = time.monotonic() - placed
        try:
            workflow._wait_for_orders(order_ids, timeout=60 + orders)
            time.sleep(0.6)  # a sample after the last confirmation (the sampler's period: 0.5 s)
            drain = workflow.drain_of(order_ids)
            busy, cores = sampler.during(drain.first, drain.last)
        finally:
            sampler.pids = []
            for process in started:
                self.stack.stop(process)
        self.log(f"  placed in {placed - placing:.1f} s, workers up in {up:.1f} s, drained in {drain.seconds:.1f} s")
        return drain.per_second, busy, cores


def run(*, orders: int, rounds: int, database_url: str | None, log: Log) -> tuple[list[Result], dict]:
    require_hosts()
    results = {setup: Result(*setup) for setup in SETUPS}
    scratch = scratch_name("bench_scale", database_url)
    tag = uuid.uuid4().hex[:6]
    with (
        tempfile.TemporaryDirectory(prefix="shop-bench-scale-") as tmp,
        scratch_database(scratch, database_url) as db,
    ):
        if not db.engine.startswith("PostgreSQL"):
            raise BenchmarkError(f"The scaling benchmark needs PostgreSQL: {db.engine}")
        log(f"Scratch database: {db.engine} ({scratch})")
        network = Network(HOSTS)
        try:
            network.start()
            gateway = network.gateway
            log(f"Hosts: {', '.join(f'{h.name} {h.address}' for h in network.hosts.values())}; this machine {gateway}")
            database = urlsplit(db.url)
            with (
                Stack(Path(tmp), db.url) as stack,
                relay(gateway, f"{database.hostname}:{database.port or 5432}", Path(tmp)) as postgres,
                relay(gateway, f"127.0.0.1:{stack.redis_port}", Path(tmp)) as redis_relay,
                relay(gateway, RABBITMQ, Path(tmp)) as rabbit_relay,
                vhost(f"{scratch}_classic_{tag}") as classic,
                vhost(f"{scratch}_quorum_{tag}") as quorum,
                CpuSampler() as sampler,
            ):
                auth = database.netloc.rpartition("@")[0]
                bench = Bench(stack, network, urlunsplit(database._replace(netloc=f"{auth}@{postgres}")), log)
                bench.broker_urls = {
                    "redis": (stack.broker_url, f"redis://{redis_relay}/0"),
                    "classic": (
                        f"amqp://guest:guest@{RABBITMQ}/{classic}",
                        f"amqp://guest:guest@{rabbit_relay}/{classic}",
                    ),
                    "quorum": (
                        f"amqp://guest:guest@{RABBITMQ}/{quorum}",
                        f"amqp://guest:guest@{rabbit_relay}/{quorum}",
                    ),
                }
                machine = _machine(db.engine, stack.redis_version, sampler, orders, rounds)
                log(f"Machine: {machine['cpu']}, {machine['cores']} cores; before the run {machine['busy_before']}")
                for round_ in range(rounds):
                    order = SETUPS[round_ % len(SETUPS) :] + SETUPS[: round_ % len(SETUPS)]
                    for setup in order:
                        result = results[setup]
                        log(f"Round {round_ + 1}/{rounds}: {result.label}, {orders} orders ...")
                        rate, busy, cores = bench.measure(*setup, orders, sampler)
                        result.rates.append(rate)
                        result.machine_busy.append(busy)
                        result.worker_cores.append(cores)
                        log(f"  {rate:.1f} orders/s; machine CPU {100 * busy:.0f} % busy, workers {cores:.2f} cores")
        finally:
            network.stop()
    return list(results.values()), machine


def _machine(engine: str, redis_version: str, sampler: CpuSampler, orders: int, rounds: int) -> dict:
    before = sampler.sample()
    time.sleep(2)
    after = sampler.sample()
    models = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
    cpu = models[0].split(":", 1)[1].strip() if models else platform.processor()
    rabbit = subprocess.run(["rabbitmqctl", "-q", "version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "database": engine,
        "Redis": redis_version,
        "RabbitMQ": f"{rabbit} (one node, the machine's)",
        "Python": platform.python_version(),
        "Django": django.get_version(),
        "Celery": celery.__version__,
        "orders per measurement": orders,
        "rounds": rounds,
        "busy_before": f"{100 * (after[1] - before[1]) / max(1, after[2] - before[2]):.0f} % of the CPU over 2 s",
        "load average before": " ".join(f"{n:.2f}" for n in os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _spread(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    middle = f"{median(values) * scale:.{digits}f}"
    if len(values) < 2:
        return middle
    return f"{middle} ({min(values) * scale:.{digits}f}–{max(values) * scale:.{digits}f})"


def describe(layout: str) -> str:
    """ "worker-a: orders ×4 + notifications ×20", the pools on each host of the layout."""
    hosts = []
    for host, workers in LAYOUTS[layout].items():
        pools = (
            f"{args[args.index('-Q') + 1].split(',')[0]} ×{args[args.index('--concurrency') + 1]}" for args in workers
        )
        hosts.append(f"{host if layout != LOOPBACK else 'no namespace, loopback'}: {' + '.join(pools)}")
    return "; ".join(hosts)


def table(results: list[Result], machine: dict) -> str:
    """A markdown table: each configuration's median orders/s (min–max of the rounds), against
    Redis with one worker host, and the CPU during the drains."""
    baseline = median(results[0].rates)
    lines = [
        "| broker | workers | order workflows/s, median (min–max) | vs Redis, one host | machine CPU busy | "
        "workers' CPU, cores | orders/s per worker core |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        lines.append(
            f"| {BROKERS[result.broker]} | {describe(result.layout)} | {_spread(result.rates)} | "
            f"{median(result.rates) / baseline:.2f}× | {_spread(result.machine_busy, 100, 0)} % | "
            f"{_spread(result.worker_cores, digits=2)} | {_spread(result.per_core)} |"
        )
    described = ", ".join(f"{key} {value}" for key, value in machine.items())
    return "\n".join(lines) + f"\n\nmachine: {described}"


def write_json(path: Path, results: list[Result], machine: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": machine,
        "layouts": {name: describe(name) for name in LAYOUTS},
        "results": [result.as_dict() for result in results],
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
