"""The processes a benchmark runs: a private Redis, `celery -A ... worker`, gunicorn.

Each is a real process started the way the README starts it, with the benchmark's scratch
database and broker in its environment, and its output in a log file under the run's folder.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import redis

from shop import embedded_redis
from shop.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A long-running subprocess in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self._terminated = False

    def start(self) -> "Process":
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self) -> None:
        """SIGTERM (a worker's warm shutdown), once; `stop` waits for it."""
        if self.process is not None and not self._terminated and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM (a worker's warm shutdown), then SIGKILL to whatever of its group is left."""
        if self.process is None:
            return
        self.terminate()
        if self.process.poll() is None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self._log.close()


class Stack:
    """A private Redis on a loopback port, and the shop's processes against the scratch database."""

    def __init__(self, directory: Path, database_url: str, env: dict[str, str] | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.database_url, self.extra_env = database_url, env or {}
        self.redis_port = free_port()
        self.broker_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.processes: list[Process] = []
        self._started = 0  # processes started so far: each gets a log of its own
        self._redis: subprocess.Popen | None = None

    def __enter__(self) -> "Stack":
        """Start Redis, and send this process's own tasks (the checkouts' workflows) to it."""
        self._redis = embedded_redis.start_on_port(self.redis_port, self.directory / "redis")
        self._broker_url, celery_app.conf.broker_url = celery_app.conf.broker_url, self.broker_url
        return self

    def __exit__(self, *exc) -> None:
        celery_app.conf.broker_url = self._broker_url
        celery_app.pool.force_close_all()
        for process in reversed(self.processes):
            process.stop()
        if self._redis:
            self._redis.kill()
            self._redis.wait()

    @property
    def redis_version(self) -> str:
        return redis.Redis(port=self.redis_port).info()["redis_version"]

    def env(self, **overrides: str) -> dict[str, str]:
        base = {
            "DATABASE_URL": self.database_url,
            "CELERY_BROKER_URL": self.broker_url,
            "DJANGO_SETTINGS_MODULE": "settings",
            "SHOP_VAR_DIR": str(self.directory / "var"),
            "LOG_LEVEL": "WARNING",
            # Thousands of checkouts from one address: counted as in production (the same SQL per
            # request), never refused (orders/ratelimit.py).
            "RATE_LIMIT_CHECKOUT": "100000000/60",
        }
        return {**os.environ, **base, **self.extra_env, **overrides}

    def worker(self, *args: str, app: str = "shop", **env: str) -> Process:
        """`celery -A <app> worker <args>` (Celery's defaults where `args` say nothing), once it
        answers a ping: consuming."""
        return self.workers([args], app=app, **env)[0]

    def workers(self, layouts: Sequence[Sequence[str]], app: str = "shop", **env: str) -> list[Process]:
        """A worker for each of `layouts` (its arguments), started together, once each answers a
        ping: each takes seconds to boot, and the quick run (CI) boots workers a dozen times.

        Without mingle: at boot it waits a full second for other workers' revoked task ids, and
        here there are none (a private Redis, nothing revoked); every figure is timed from the
        first task run, after the boot."""
        started = []
        for args in layouts:
            self._started += 1
            name = f"worker{self._started}"
            hostname = f"{name}@{socket.gethostname()}"
            argv = [str(BIN / "celery"), "-A", app, "worker", "--hostname", hostname, "--without-mingle", *args]
            process = Process(name, argv, self.env(**env), self.directory).start()
            self.processes.append(process)
            started.append((hostname, process))
        deadline = time.monotonic() + 60
        for hostname, process in started:
            while not celery_app.control.ping(destination=[hostname], timeout=0.5):
                if process.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{process.name} did not start:\n{process.log()[-3000:]}")
        return [process for _, process in started]

    def web(self, wsgi: str = "shop.wsgi", workers: int = 2, threads: int = 8, **env: str) -> str:
        """gunicorn serving `wsgi`, as the Procfile runs it; returns its base URL once it answers."""
        port = free_port()
        argv = [str(BIN / "gunicorn"), wsgi, "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
        argv += ["--threads", str(threads)]
        self._started += 1
        process = Process(f"web{self._started}", argv, self.env(**env), self.directory).start()
        self.processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/api/products/", timeout=5).close()
                return url
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if process.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start:\n{process.log()[-3000:]}") from None
                time.sleep(0.2)

    def stop(self, *processes: Process) -> None:
        """Their warm shutdowns at once, not one after the other (a second or two each)."""
        for process in processes:
            process.terminate()
        for process in processes:
            process.stop()
            self.processes.remove(process)

    def purge(self) -> None:
        """Empty the broker between measurements."""
        redis.Redis(port=self.redis_port).flushall()
