"""Deployment hygiene: production settings pass Django's deploy checks, the laptop broker is not
on the network, and no secret is in the repository."""

import os
import re
import secrets
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from shop import embedded_redis

ROOT = Path(__file__).resolve().parent.parent.parent

# Everything that decides how secure the settings are: the tests set these themselves.
SECURITY_ENV = ("DEBUG", "HTTPS", "SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "BEHIND_PROXY")


def manage(*args: str, env: dict[str, str], var_dir: Path) -> subprocess.CompletedProcess:
    """`python manage.py ...` in a fresh process with exactly the given security environment."""
    base = {
        key: value for key, value in os.environ.items() if key not in SECURITY_ENV and not key.startswith("SECURE_")
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, "SHOP_VAR_DIR": str(var_dir), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_the_deploy_check_without_warnings(tmp_path: Path) -> None:
    """The README's production environment is enough for `check --deploy` to find nothing to warn about."""
    production = {
        "HTTPS": "1",
        "SECRET_KEY": secrets.token_urlsafe(48)[:64],
        "ALLOWED_HOSTS": "shop.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://shop.example.com",
    }
    assert len(production["SECRET_KEY"]) == 64

    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production, var_dir=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in result.stdout, output
    assert "WARNING" not in output and "security.W" not in output, output


def test_the_laptop_setup_still_runs_with_debug_and_nothing_configured(tmp_path: Path) -> None:
    """DEBUG=1 and no other variable: the shop starts, with a private generated SECRET_KEY."""
    result = manage("check", env={"DEBUG": "1"}, var_dir=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    key_file = tmp_path / "secret_key"
    assert len(key_file.read_text().strip()) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, "the generated SECRET_KEY must be readable by its owner only"


def listening_tcp_ports(pid: int) -> set[int]:
    """TCP ports the process listens on, from Linux's /proc (as on CI): its socket inodes in LISTEN state."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_the_embedded_redis_listens_on_no_tcp_port(tmp_path: Path) -> None:
    """Nothing on the network can queue tasks on a laptop: the broker is a unix socket only its owner opens."""
    with socket.create_server(("127.0.0.1", 0)) as control:  # the check itself sees a listening socket
        assert control.getsockname()[1] in listening_tcp_ports(os.getpid())

    sock = tmp_path / "redis.sock"
    server = embedded_redis.start(sock, tmp_path / "data")
    try:
        client = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
        assert client.config_get("port") == {"port": "0"}
        assert client.config_get("unixsocketperm") == {"unixsocketperm": "700"}
        assert stat.S_IMODE(sock.stat().st_mode) == 0o700
        assert listening_tcp_ports(server.pid) == set()
        run_id = client.info("server")["run_id"]
        try:
            other = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1, decode_responses=True)
            reached = other.info("server")["run_id"]
        except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError, redis.ResponseError):
            reached = None  # nothing there (a machine's own Redis may be, as in CI)
        assert reached != run_id, "the embedded Redis answered on 127.0.0.1:6379"
    finally:
        server.terminate()
        server.wait(timeout=10)


SECRET_KEY_LITERAL = re.compile(r"""^\s*SECRET_KEY\s*(?::[^=\n]*)?=\s*[rRbBuU]{0,2}["']""", re.M)
SECRET_KEY_DEFAULT = re.compile(r"""(?:environ\.get|getenv|env_str)\(\s*["']SECRET_KEY["']\s*,\s*[rRbBuU]{0,2}["']""")
PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
INSECURE_KEY = re.compile(re.escape("django-" + "insecure-"))  # startproject's throwaway key


def repository_files() -> list[str]:
    """Tracked files and the untracked ones `git add -A` would add."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [path for path in listing.split("\0") if path]


def test_no_secret_is_in_the_repository() -> None:
    """A hard-coded SECRET_KEY, a private key or anything under var/ in git leaks to whoever clones it."""
    planted = 'SECRET_KEY = "hunter2"\nkey = os.environ.get(' + '"SECRET_KEY", "hunter2")'  # split: not a hit itself
    assert SECRET_KEY_LITERAL.search(planted) and SECRET_KEY_DEFAULT.search(planted), "the scan must see a planted key"
    files = repository_files()
    assert "settings/core.py" in files

    found = []
    for path in files:
        try:
            text = (ROOT / path).read_bytes().decode("utf-8", errors="replace")
        except (FileNotFoundError, IsADirectoryError):
            continue  # deleted in the working tree
        for pattern in (SECRET_KEY_LITERAL, SECRET_KEY_DEFAULT, PRIVATE_KEY, INSECURE_KEY):
            if match := pattern.search(text):
                found.append(f"{path}: {match.group(0).strip()!r}")
    assert found == []

    assert [path for path in files if path == "var" or path.startswith("var/")] == []
    for path in ("var/secret_key", "var/db.sqlite3", "var/demo-admin-password"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert ignored.returncode == 0, f"{path} must be git-ignored: it holds a secret or customer data"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "/admin/tasks_admin/taskrecord/?state=%00",
        "/admin/orders/order/?status=x%00",
        "/admin/django_celery_results/groupresult/?date_done__gte=%00",
        "/?q=%00",
    ],
)
def test_a_nul_character_in_the_address_is_a_400_everywhere(admin_client, url):
    assert admin_client.get(url).status_code == 400
