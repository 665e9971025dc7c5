"""Many hosts on one machine: Linux network namespaces on a bridge, and a RabbitMQ cluster on them.

Each host (`web`, `worker-a`, `rabbit1`, ...) is a network namespace with one veth interface on a
bridge in the machine's own namespace, which is the `db` host: PostgreSQL stays where it is,
reached through a proxy on the bridge's address (tests/fakes/tcp_proxy.py), like the fake SMS gateway and
SMTP server. Every process of the shop talks to the others by their bridge addresses, never over
loopback. `ip netns` needs root (CI runs as root); without it the tests skip, except in CI.

Names start with `shn<pid of the test run>`: a run cleans up what an earlier one left behind
(its process died before its finalizers ran), and nothing of another run still going.
Used by tests/reliability/test_failover.py.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import require

PREFIX = "shn"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # Debian's /usr/sbin one re-runs itself as user rabbitmq
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def require_network_namespaces() -> None:
    require(shutil.which("ip") is not None, "the hosts tests need `ip` (Debian's iproute2)")
    require(os.geteuid() == 0, "the hosts tests build network namespaces: they need root")
    require(Path(RABBITMQ_SERVER).exists(), f"the hosts tests need RabbitMQ ({RABBITMQ_SERVER})")


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    link: str  # the veth end on the bridge: down cuts the host off the network

    @property
    def exec(self) -> tuple[str, ...]:
        """The prefix that runs a command on this host."""
        return ("ip", "netns", "exec", self.namespace)

    def pids(self) -> list[int]:
        return [int(pid) for pid in ip("netns", "pids", self.namespace).split()]


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill_all(host: Host, timeout: float = 10) -> None:
    """SIGKILL every process in the host's namespace (epmd and helpers included) and reap them."""
    deadline = time.monotonic() + timeout
    while pids := host.pids():
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} of host {host.name} outlived SIGKILL")
        time.sleep(0.1)


def clean_stale() -> list[str]:
    """Delete namespaces and links of earlier runs whose test process is gone; returns their names."""
    removed = []
    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        if (match := re.fullmatch(rf"{PREFIX}(\d+)-(.+)", name)) and not _owner_alive(int(match[1])):
            _kill_all(Host(match[2], name, "", ""))
            ip("netns", "delete", name)
            removed.append(name)
    for match in re.finditer(rf"^\d+: ({PREFIX}(\d+)(?:br|v\d+))[@:]", ip("-o", "link", "show"), re.MULTILINE):
        if not _owner_alive(int(match[2])):
            subprocess.run(["ip", "link", "delete", match[1]], capture_output=True)
            removed.append(match[1])
    return removed


@dataclass
class Network:
    """A bridge on this machine (the `db` host: .1 for the providers, .2 for PostgreSQL) and one
    namespace per host name."""

    names: list[str]
    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}")
    hosts: dict[str, Host] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.subnet = f"10.213.{int(self.tag.removeprefix(PREFIX)) % 250}"
        self.gateway = f"{self.subnet}.1"
        self.db = f"{self.subnet}.2"  # PostgreSQL's own address on the bridge, to be partitioned apart
        self.nowhere = f"{self.subnet}.254"  # a next hop nobody answers: what is routed to it is lost
        self.bridge = f"{self.tag}br"

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def start(self) -> "Network":
        clean_stale()
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("addr", "add", f"{self.db}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for number, name in enumerate(self.names, start=10):
            host = Host(name, f"{self.tag}-{name}", f"{self.subnet}.{number}", f"{self.tag}v{number}")
            self.hosts[name] = host
            ip("netns", "add", host.namespace)
            ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
            ip("link", "set", host.link, "master", self.bridge, "up")
            ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
            ip("-n", host.namespace, "link", "set", "eth0", "up")
            ip("-n", host.namespace, "link", "set", "lo", "up")
        return self

    def kill_host(self, name: str) -> None:
        """Every process on the host SIGKILLed at once: the machine lost its power."""
        _kill_all(self.hosts[name])

    def cut(self, name: str) -> None:
        """The host's link down: it is off the network, its processes run on."""
        ip("link", "set", self.hosts[name].link, "down")

    def restore(self, name: str) -> None:
        ip("link", "set", self.hosts[name].link, "up")

    def partition(self, name: str, *addresses: str) -> None:
        """The host can no longer reach these addresses, and nothing tells it so: its packets to them
        are routed to a next hop that never answers, so a connection attempt hangs and an open
        connection stalls, as behind a firewall dropping them; the rest of its network works.
        (This container's kernel has no packet filter or tc classifier: routes are what there is.)"""
        for address in addresses:
            ip("-n", self.hosts[name].namespace, "route", "add", f"{address}/32", "via", self.nowhere)

    def heal(self, name: str, *addresses: str) -> None:
        for address in addresses:
            ip("-n", self.hosts[name].namespace, "route", "del", f"{address}/32")

    def stop(self) -> None:
        """Kill whatever still runs on the hosts and delete them, their links and the bridge. A veth
        usually goes with its namespace, but not while the kernel still holds the namespace: the Redis
        host's link outlived it once, and the next module's network could not reuse its name."""
        for host in self.hosts.values():
            try:
                _kill_all(host)
            finally:
                subprocess.run(["ip", "netns", "delete", host.namespace], capture_output=True)
                subprocess.run(["ip", "link", "delete", host.link], capture_output=True)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)
        self.hosts.clear()


@contextmanager
def hosts(names: list[str]) -> Iterator[Network]:
    """The hosts, deleted with everything running on them when the block ends, however it ends
    (a test module's fixture: test_failover.py, test_failover_redis.py)."""
    require_network_namespaces()
    network = Network(names)
    try:
        yield network.start()
    finally:
        network.stop()


class RabbitCluster:
    """Three RabbitMQ nodes, one per host, named by address (RABBITMQ_USE_LONGNAME), sharing an
    Erlang cookie, clustered at first boot by peer discovery (classic_config), each with its own
    data directory. Clients get every node in the broker URL (Celery's failover URLs)."""

    def __init__(self, network: Network, names: list[str], directory: Path) -> None:
        self.network, self.names, self.directory = network, names, directory
        self.home = directory / "home"  # the Erlang cookie, for the nodes and rabbitmqctl
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(f"SHOPHOSTS{os.getpid()}")
        cookie.chmod(0o400)
        self.processes: dict[str, subprocess.Popen] = {}

    def node(self, name: str) -> str:
        return f"rabbit@{self.network[name].address}"

    @property
    def url(self) -> str:
        return ";".join(f"amqp://guest:guest@{self.network[name].address}:5672//" for name in self.names)

    def _env(self, name: str) -> dict[str, str]:
        base = self.directory / name
        base.mkdir(exist_ok=True)
        address = self.network[name].address
        peers = "\n".join(
            f"cluster_formation.classic_config.nodes.{i} = {self.node(n)}" for i, n in enumerate(self.names, 1)
        )
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {address}:5672\n"
            f"distribution.listener.interface = {address}\n"
            "loopback_users = none\n"  # guest from the other hosts
            "cluster_formation.peer_discovery_backend = classic_config\n"
            f"{peers}\n"
        )
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")  # not Debian's: it pins the node to 127.0.0.1
        return {
            **os.environ,
            "HOME": str(self.home),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_USE_LONGNAME": "true",
            "RABBITMQ_NODENAME": self.node(name),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(base / "plugins"),
            "RABBITMQ_PID_FILE": str(base / "pid"),
            "ERL_EPMD_ADDRESS": address,
        }

    def start(self, name: str) -> None:
        log = (self.directory / f"{name}.out").open("ab")
        self.processes[name] = subprocess.Popen(
            [*self.network[name].exec, RABBITMQ_SERVER],
            env=self._env(name),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_all(self, timeout: float = 240) -> None:
        """The first node, then the others, which join it: one cluster, never two."""
        first, *others = self.names
        self.start(first)
        self.wait_running([first], timeout)
        for name in others:
            self.start(name)
        self.wait_running(self.names, timeout)

    def kill(self, name: str) -> None:
        """SIGKILL the node (and its epmd): no goodbye to its peers or clients."""
        self.network.kill_host(name)
        self.processes.pop(name).wait()

    def ctl(self, via: str, *args: str, timeout: float = 60) -> str:
        argv = [*self.network[via].exec, RABBITMQCTL, "-q", "-l", "-n", self.node(via), *args]
        done = subprocess.run(argv, env=self._env(via), capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {via}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def running(self, via: str) -> list[str]:
        status = json.loads(self.ctl(via, "cluster_status", "--formatter", "json"))
        return status.get("running_nodes", [])

    def wait_running(self, names: list[str], timeout: float = 240) -> None:
        expected = {self.node(n) for n in names}
        deadline = time.monotonic() + timeout
        while True:
            try:
                if expected <= set(self.running(names[0])):
                    return
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError):
                pass
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{self.log(name)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes {sorted(expected)} not all running after {timeout}s")
            time.sleep(1)

    def connections_from(self, address: str) -> int:
        """Client connections the cluster holds open from a host's address, asked of any running node."""
        for name in self.processes:
            try:
                rows = json.loads(self.ctl(name, "list_connections", "peer_host", "--formatter", "json"))
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError):
                continue
            return sum(row["peer_host"] == address for row in rows)
        raise RuntimeError("no RabbitMQ node answered")

    def leader(self, queue: str, via: str) -> str:
        """The host whose node leads the quorum queue (the one holding its Raft log's leader)."""
        rows = json.loads(self.ctl(via, "list_queues", "name", "leader", "--formatter", "json"))
        node = next(row["leader"] for row in rows if row["name"] == queue)
        return next(name for name in self.names if self.node(name) == node)

    def log(self, name: str) -> str:
        path = self.directory / f"{name}.out"
        logs = sorted((self.directory / name / "log").glob("*.log"))
        text = path.read_text(errors="replace") if path.exists() else ""
        return text + "".join(log.read_text(errors="replace")[-3000:] for log in logs)
