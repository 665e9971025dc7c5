"""Real processes for the failure-injection suite: a private Redis, gunicorn, workers and
beat, with local SMS and SMTP providers (the PostgreSQL proxy: tests/fakes/tcp_proxy.py)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import redis
from django.db import close_old_connections

from benchmarks.stack import Process as LoggedProcess
from shop import embedded_redis
from tests import support
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.fakes.smtp_server import FakeSmtpServer, free_port
from tests.processes import WorkerProcess

from .network import Host

BIN = Path(sys.executable).parent
FINAL_STATUSES = ("confirmed", "failed", "cancelled")
WRITE_BEHIND_SECONDS = 0.5  # how often the stack's workers write their batched records


class RedisServer:
    """A private redis-server on a loopback port, stopped and started at will (no persistence)."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.port = directory, free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = embedded_redis.start_on_port(self.port, self.directory)

    def stop(self, keep_data: bool = False) -> None:
        """Killed, losing everything; or, if `keep_data`, shut down after saving its data (SHUTDOWN
        SAVE), which the next start loads again, as a production Redis with persistence would."""
        if self.process and self.process.poll() is None:
            if keep_data:
                redis.Redis(port=self.port, socket_timeout=10).shutdown(save=True)
            else:
                self.process.kill()
            self.process.wait()


class Process(LoggedProcess):
    """A stack process (gunicorn, beat) that stops by a signal to its whole group."""

    def signal(self, signum: int) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signum)

    def stop(self, timeout: float = 20) -> None:
        if self.process is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait()
        self._log.close()


@dataclass
class Audit:
    """What happened to a batch of orders, from the database and the providers' own logs."""

    placed: int
    statuses: Counter
    charges_duplicated: int
    charge_requests_deduplicated: int
    emails_duplicated: int
    sms_delivered_twice: int
    sms_requests_deduplicated: int
    lost: int
    notes: list[str] = field(default_factory=list)

    @property
    def confirmed(self) -> int:
        return self.statuses.get("confirmed", 0)

    def figures(self) -> dict:
        return {
            "orders placed": self.placed,
            "confirmed": self.confirmed,
            "failed / cancelled": self.statuses.get("failed", 0) + self.statuses.get("cancelled", 0),
            "duplicate charges": self.charges_duplicated,
            "duplicate e-mails": self.emails_duplicated,
            "duplicate SMS": self.sms_delivered_twice,
            "lost": self.lost,
            "repeats absorbed by idempotency keys": self.charge_requests_deduplicated + self.sms_requests_deduplicated,
        }


class Stack:
    """The shop as separate processes against a private Redis and the test database."""

    def __init__(
        self,
        tmp: Path,
        database_url: str,
        sms: FakeSmsGateway,
        smtp: FakeSmtpServer,
        env: dict[str, str] | None = None,
        broker_url: str | None = None,
    ) -> None:
        self.tmp, self.database_url, self.sms, self.smtp = tmp, database_url, sms, smtp
        self.fault_dir = tmp / "faults"
        self.fault_dir.mkdir(parents=True, exist_ok=True)
        self.redis = None if broker_url else RedisServer(tmp / "redis")
        self.broker_url = broker_url or self.redis.url
        self.extra_env = env or {}
        self.processes: list[Process] = []
        self.workers: list[WorkerProcess] = []
        self.web: Process | None = None
        self.web_url = ""

    def env(self, **overrides: str) -> dict[str, str]:
        base = {
            "DATABASE_URL": self.database_url,
            "CELERY_BROKER_URL": self.broker_url,
            "SMS_PROVIDER": "http",
            "SMS_HTTP_URL": self.sms.url,
            "SMS_API_KEY": "reliability",
            "SMS_TIMEOUT": "1",
            "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(self.smtp.port),
            "EMAIL_TIMEOUT": "5",
            "PAYMENT_DEMO_LATENCY": "0.02",
            # The same policies as production, on a shorter clock: a killed worker's
            # tasks come back after 8 s, retries wait 0.2–2 s.
            "CELERY_VISIBILITY_TIMEOUT": "8",
            "CELERY_RESTORE_INTERVAL": "1",
            "CELERY_RESTORE_THROTTLE": "1",
            "CELERY_TASK_SOFT_TIME_LIMIT": "4",
            "CELERY_TASK_TIME_LIMIT": "5",
            "DB_LOCK_TIMEOUT": "2",  # under the soft time limit, as the defaults are (10 s, 30 s)
            "CELERY_SOFT_SHUTDOWN_TIMEOUT": "5",
            "TASK_RETRY_BACKOFF": "0.2",
            "TASK_RETRY_BACKOFF_MAX": "2",
            "TASK_MAX_RETRIES": "12",
            "TASK_WORKER_LOST_RETRY_DELAY": "0.5",
            "STUCK_WORKFLOW_MINUTES": "0.1",
            "WRITE_BEHIND_SECONDS": str(WRITE_BEHIND_SECONDS),
            "CELERY_EXTRA_IMPORTS": "tests.fakes.faults,tests.fakes.tasks,tests.fakes.flushes",
            "FAULT_DIR": str(self.fault_dir),
            "FAKE_TASKS_DIR": str(self.fault_dir),
            "LOG_LEVEL": "WARNING",
            # Hundreds of checkouts from one address: the abuse limits are tested elsewhere.
            "RATE_LIMITS_ENABLED": "0",
        }
        return {**os.environ, **base, **self.extra_env, **overrides}

    def start(self, workers: int = 1, web: bool = True) -> "Stack":
        if self.redis:
            self.redis.start()
        for _ in range(workers):
            self.start_worker()
        if web:
            self.start_web()
        return self

    def start_worker(self, *args: str, host: Host | None = None, **env: str) -> WorkerProcess:
        """A worker on this machine, or on a host of a network of namespaces (tests/reliability/network.py)."""
        name = f"worker{len(self.workers) + 1}" + (f"-{host.name}" if host else "")
        argv = ("--hostname", f"{name}@%h", *args)
        worker = WorkerProcess(self.env(**env), self.tmp / f"{name}.log", argv, prefix=host.exec if host else ())
        self.workers.append(worker.start())
        return worker

    def start_web(self, workers: int = 2, threads: int = 8, host: Host | None = None) -> None:
        address, port = (host.address, 8000) if host else ("127.0.0.1", free_port())
        argv = [*(host.exec if host else ()), str(BIN / "gunicorn"), "shop.wsgi", "--bind", f"{address}:{port}"]
        argv += ["--workers", str(workers), "--threads", str(threads)]
        self.web = Process("web", argv, self.env(), self.tmp).start()
        self.processes.append(self.web)
        self.web_url = f"http://{address}:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.web_url + "/api/products/", timeout=2).close()
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):  # a first answer slower than 2 s: ask again
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start:\n{self.web.log()[-3000:]}") from None
                time.sleep(0.2)

    def start_beat(self, host: Host | None = None, **env: str) -> Process:
        argv = [*(host.exec if host else ()), str(BIN / "celery"), "-A", "shop", "beat", "--loglevel", "INFO"]
        name = f"beat{len(self.processes)}" + (f"-{host.name}" if host else "")
        beat = Process(name, argv, self.env(**env), self.tmp).start()
        self.processes.append(beat)
        return beat

    def answers_ping(self, worker: WorkerProcess, timeout: float = 2) -> bool:
        """The worker answers a remote-control ping through the stack's broker: its consumer is
        connected and serving, whether it reconnected or its connection outlived a fault (what
        its log says about it depends on the broker and the fault; tests/support.py)."""
        node = f"{worker.log_path.stem}@{socket.gethostname()}"  # the --hostname start_worker gives
        return support.answers_ping(self.broker_url, node, timeout)

    def kill_worker(self, worker: WorkerProcess) -> None:
        """SIGKILL to the worker and its pool: no warm shutdown, no acknowledgement."""
        os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait()
        self.workers.remove(worker)

    def stop(self) -> None:
        for worker in list(self.workers):
            worker.stop()
        for process in self.processes:
            process.stop()
        if self.redis:
            self.redis.stop()

    def logs(self) -> str:
        parts = [f"---- {w.log_path.name} ----\n{w.log()[-4000:]}" for w in self.workers]
        parts += [f"---- {p.name} ----\n{p.log()[-2000:]}" for p in self.processes]
        return "\n".join(parts)

    # Orders

    def checkout(self, payload: dict) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.web_url + "/api/orders/", json.dumps(payload).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def place_orders(self, payloads: Iterable[dict], concurrency: int = 8) -> list[str]:
        """Check out through the HTTP server; every order must be accepted (202)."""
        with ThreadPoolExecutor(concurrency) as pool:
            answers = list(pool.map(self.checkout, payloads))
        bad = [answer for answer in answers if answer[0] != 202]
        assert not bad, f"{len(bad)} checkouts refused: {bad[:3]}"
        return [body["id"] for _, body in answers]

    def wait_until_final(self, order_ids: list[str], timeout: float = 120, settled: bool = True) -> None:
        """Until every order is confirmed, failed or cancelled, and none of its messages is still
        to be sent (they follow the confirmation); if `settled`, also until the workers' last
        batches of records are written."""
        from notifications.models import Notification
        from orders.models import Order

        deadline = time.monotonic() + timeout
        while True:
            seen_at = time.time()
            close_old_connections()
            open_orders = Order.objects.filter(pk__in=order_ids).exclude(status__in=FINAL_STATUSES).count()
            running = Notification.objects.filter(order_id__in=order_ids, status="pending").exists()
            if not open_orders and not running:
                if settled:
                    self.wait_for_records(seen_at)
                return
            if time.monotonic() > deadline:
                statuses = Counter(Order.objects.filter(pk__in=order_ids).values_list("status", flat=True))
                unsent = Counter(
                    Notification.objects.filter(order_id__in=order_ids, status="pending").values_list(
                        "channel", flat=True
                    )
                )
                raise AssertionError(
                    f"{open_orders} orders not final after {timeout}s ({dict(statuses)}; messages pending: "
                    f"{dict(unsent)})\n{self.logs()}"
                )
            time.sleep(0.25)

    def wait_for_records(self, since: float, timeout: float = 30) -> None:
        """Until every running worker process has written a batch of records begun after `since`
        (wall clock): whatever it held then is in the database (tasks_admin/writebehind.py,
        tests/fakes/flushes.py). A process that died took its batch with it."""
        deadline = time.monotonic() + timeout
        while True:
            groups = {worker.process.pid for worker in self.workers if worker.process.poll() is None}
            behind = [
                marker.name
                for marker in self.fault_dir.glob("flushed-*")
                if marker.name.partition("-")[2].isdigit()
                and _process_group(int(marker.name.partition("-")[2])) in groups
                and float(marker.read_text()) <= since
            ]
            if not behind:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"worker processes {behind} wrote no records for {timeout}s\n{self.logs()}")
            time.sleep(0.05)

    def audit(self, order_ids: list[str]) -> Audit:
        from orders.models import DemoGatewayCharge, Order

        close_old_connections()
        orders = list(Order.objects.filter(pk__in=order_ids))
        statuses = Counter(order.status for order in orders)
        charges = Counter(
            DemoGatewayCharge.objects.filter(idempotency_key__in=[f"order:{o.pk}:charge" for o in orders]).values_list(
                "idempotency_key", flat=True
            )
        )
        charge_requests = sum(
            DemoGatewayCharge.objects.filter(idempotency_key__in=charges).values_list("requests", flat=True)
        )
        emails = Counter(
            (message.to[0], message.subject)
            for order in orders
            for message in self.smtp.received(to=order.email)
            if order.number in message.subject
        )
        # The gateway, like a real one honouring Idempotency-Key, delivers a key once: a
        # customer gets two texts only if the shop sent the same text under two keys.
        accepted = self.sms.accepted()
        sms_by_key = Counter(r.idempotency_key for r in accepted)
        texts = Counter(
            (r.to, order.number)
            for r in {r.idempotency_key: r for r in accepted}.values()
            for order in orders
            if order.number in r.body
        )
        delivered_twice = sum(n - 1 for n in texts.values() if n > 1)
        return Audit(
            placed=len(order_ids),
            statuses=statuses,
            charges_duplicated=sum(n - 1 for n in charges.values() if n > 1),
            charge_requests_deduplicated=charge_requests - len(charges),
            emails_duplicated=sum(n - 1 for n in emails.values() if n > 1),
            sms_delivered_twice=delivered_twice,
            sms_requests_deduplicated=sum(n - 1 for n in sms_by_key.values() if n > 1),
            lost=len(order_ids) - len(orders) + sum(statuses.get(s, 0) for s in ("pending", "processing")),
        )


def _process_group(pid: int) -> int | None:
    """The process group of a process that has not exited (nor is a zombie); None otherwise."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    state, _parent, group = stat.rpartition(")")[2].split()[:3]
    return None if state in ("Z", "X") else int(group)


def which_redis() -> str | None:
    return shutil.which("redis-server")
